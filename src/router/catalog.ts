import { ErrorCode, LATEST_PROTOCOL_VERSION } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";
import type { ServerManifest } from "../config/manifest.js";
import type { ServerChannel } from "../sandbox/driver.js";
import { GuestRpcError, TemplateError } from "../sandbox/errors.js";
import { guestNotify, guestRequest } from "../sandbox/guest-rpc.js";
import type { GuestPreparation, TemplateMeta } from "../sandbox/template.js";
import { isObject } from "./messages.js";
import { MCPVISOR_VERSION } from "../version.js";

/** A listed item (tool, prompt, resource, template): kept as the server sent it. */
const Item = z.record(z.string(), z.unknown());
export type Item = z.infer<typeof Item>;

const CatalogSchema = z.object({
  tools: z.array(Item),
  prompts: z.array(Item),
  resources: z.array(Item),
  resourceTemplates: z.array(Item),
});
/** What a server listed when its template was made; the gateway answers lists and validates calls from it. */
export type Catalog = z.infer<typeof CatalogSchema>;

const PreparedSchema = z.object({
  /** The server's InitializeResult, answered to clients by the gateway: clones are already initialized. */
  initialize: z.object({ capabilities: z.record(z.string(), z.unknown()).default({}) }).passthrough(),
  catalog: CatalogSchema,
});
export type Prepared = z.infer<typeof PreparedSchema>;

/** What the template's server is told about its client: everything enabled, so no feature is hidden. */
export const TEMPLATE_CLIENT_CAPABILITIES = { roots: { listChanged: true }, sampling: {}, elicitation: {} };

/**
 * Every request the gateway forwards carries W3C trace context in `_meta`; warming with that shape
 * matters: a server meeting it for the first time in a clone compiles code there (40 ms under TCG).
 */
const WARM_TRACEPARENT = "00-6d63707669736372207761726d757030-6d63707669736f72-01";

/** Each list method, the capability that offers it, and where its items go in the catalog. */
export const LISTS = {
  "tools/list": { capability: "tools", key: "tools", named: true },
  "prompts/list": { capability: "prompts", key: "prompts", named: true },
  "resources/list": { capability: "resources", key: "resources", named: false },
  "resources/templates/list": { capability: "resources", key: "resourceTemplates", named: false },
} as const satisfies Record<string, { capability: string; key: keyof Catalog; named: boolean }>;
export type ListMethod = keyof typeof LISTS;

export function isListMethod(method: string): method is ListMethod {
  return Object.hasOwn(LISTS, method);
}

/** A server that pages forever must not hang the template build. */
const MAX_PAGES = 50;

/**
 * The MCP side of a template: initialize the server with every client capability, warm its code paths,
 * and keep what it listed. Also warms a pooled clone. The sandbox layer runs this without knowing MCP.
 */
export const mcpPreparation: GuestPreparation = {
  async template(channel, manifest, timeoutMs) {
    const stopAnswering = answerServerRequests(channel);
    try {
      const initialize = PreparedSchema.shape.initialize.parse(
        await guestRequest(channel, "initialize", {
          protocolVersion: LATEST_PROTOCOL_VERSION,
          capabilities: TEMPLATE_CLIENT_CAPABILITIES,
          clientInfo: { name: "mcpvisor", version: MCPVISOR_VERSION },
        }, timeoutMs),
      );
      guestNotify(channel, "notifications/initialized");
      const catalog = await warmUp(channel, manifest, initialize.capabilities, timeoutMs);
      return { initialize, catalog } satisfies Prepared;
    } finally {
      stopAnswering();
    }
  },
  async clone(channel, manifest, prepared, timeoutMs) {
    await warmUp(channel, manifest, parsePrepared(prepared, manifest.name).initialize.capabilities, timeoutMs);
  },
};

const parsedByTemplate = new WeakMap<TemplateMeta, Map<string, Prepared>>();

/** `server`'s initialize result and catalog stored with a template (its own, or its shared sandbox's), checked once. */
export function preparedOf(meta: TemplateMeta, server: string): Prepared {
  let byServer = parsedByTemplate.get(meta);
  if (!byServer) parsedByTemplate.set(meta, (byServer = new Map()));
  let parsed = byServer.get(server);
  if (!parsed) {
    parsed = parsePrepared(meta.prepared[server], server);
    byServer.set(server, parsed);
  }
  return parsed;
}

function parsePrepared(prepared: unknown, server: string): Prepared {
  const result = PreparedSchema.safeParse(prepared);
  if (!result.success) throw new TemplateError(`the template of '${server}' holds no usable initialize result and catalog: ${result.error.message}`);
  return result.data;
}

/**
 * Exercises the server's code paths so that the compiled code and caches are in the snapshot: every
 * list the server supports (all pages), then the manifest's harmless calls.
 */
async function warmUp(channel: ServerChannel, manifest: ServerManifest, capabilities: Record<string, unknown>, timeoutMs: number): Promise<Catalog> {
  const catalog: Catalog = { tools: [], prompts: [], resources: [], resourceTemplates: [] };
  for (const [method, { capability, key }] of Object.entries(LISTS)) {
    if (!capabilities[capability]) continue;
    let cursor: string | undefined;
    for (let page = 0; page < MAX_PAGES; page++) {
      let result: Record<string, unknown>;
      try {
        result = await guestRequest(channel, method, cursor ? { cursor } : undefined, timeoutMs);
      } catch (err) {
        // A server may offer resources without templates: an unknown method just means an empty list.
        if (err instanceof GuestRpcError && err.rpcCode === ErrorCode.MethodNotFound) break;
        throw err;
      }
      catalog[key].push(...z.array(Item).catch([]).parse(result[key]));
      cursor = typeof result.nextCursor === "string" ? result.nextCursor : undefined;
      if (!cursor) break;
    }
  }
  for (const request of manifest.warmup) {
    const params = request.params ?? {};
    const meta = isObject(params._meta) ? params._meta : {};
    await guestRequest(channel, request.method, { ...params, _meta: { ...meta, traceparent: WARM_TRACEPARENT } }, timeoutMs);
  }
  // Some clients use string ids: give that shape a pass too.
  await guestRequest(channel, "ping", undefined, timeoutMs, "mcpvisor-warm");
  return catalog;
}

/**
 * While the template is built nobody is on the client side, but the server may ask (e.g. server-filesystem
 * asks for roots right after initialize). It gets an answer, so it does not wait in every clone.
 */
function answerServerRequests(channel: ServerChannel): () => void {
  return channel.onMessage((message) => {
    if (typeof message.method !== "string" || message.id === undefined) return;
    channel.send(
      message.method === "roots/list"
        ? { jsonrpc: "2.0", id: message.id, result: { roots: [] } }
        : { jsonrpc: "2.0", id: message.id, error: { code: ErrorCode.MethodNotFound, message: "no client while the template is built" } },
    );
  });
}
