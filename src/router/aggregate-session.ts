import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { ErrorCode, type RequestId } from "@modelcontextprotocol/sdk/types.js";
import type { Logger } from "pino";
import type { JsonRpcMessage } from "../../sandbox/agent/protocol.js";
import type { SandboxPool } from "../sandbox/pool.js";
import type { Catalog } from "../sandbox/template.js";
import type { RequestRecord } from "../telemetry/events.js";
import { qualify, splitQualified } from "./names.js";
import { ServerLink } from "./server-link.js";
import { Session, type SessionOwner } from "./session.js";
import { mayUseServer } from "../auth/principal.js";

type Item = Record<string, unknown>;

const LISTS: Record<string, { key: keyof Catalog; named: boolean }> = {
  "tools/list": { key: "tools", named: true },
  "prompts/list": { key: "prompts", named: true },
  "resources/list": { key: "resources", named: false },
  "resources/templates/list": { key: "resourceTemplates", named: false },
};

/**
 * Every hosted server behind one endpoint. Tools and prompts are namespaced `<server>__<name>`;
 * resources keep their URIs and are routed by which server listed them. Each server gets its own clone,
 * resumed only when the session first needs that server: listing is answered from the templates'
 * catalogs (or from a live clone, whose list may have changed).
 */
export class AggregateSession extends Session {
  private readonly serverLinks = new Map<string, ServerLink>();
  /** Server->client requests get ids of ours, since two servers may use the same id. */
  private readonly upstreamRequests = new Map<string, { link: ServerLink; id: RequestId }>();
  private nextUpstreamId = 1;
  /** Which server each forwarded client request went to, for failures and cancellation. */
  private readonly routes = new Map<RequestId, string>();

  constructor(transport: Transport, pool: SandboxPool, log: Logger, transportKind: string, owner: SessionOwner, stateless = false) {
    super(transport, pool, log, transportKind, owner);
    // Only the servers the tenant may use exist here: the others are not listed, and not callable.
    for (const server of pool.serverNames().filter((s) => mayUseServer(owner.principal, s))) {
      const link: ServerLink = new ServerLink(server, pool, log.child({ server }), {
        message: (message, guestMs) => void this.fromServer(link, message, guestMs),
        requestFailed: (id, error) => {
          this.routes.delete(id);
          this.fail(id, error, server);
        },
        savedStateChanged: () => this.persistSoon(),
      }, owner.sandboxes, stateless);
      this.serverLinks.set(server, link);
    }
  }

  protected linkFor(server: string): ServerLink | undefined {
    return this.serverLinks.get(server);
  }

  protected links(): ServerLink[] {
    return [...this.serverLinks.values()];
  }

  protected serverFor(id: RequestId): string {
    return this.routes.get(id) ?? "mcpvisor";
  }

  protected async initializeResult(): Promise<Record<string, unknown>> {
    const templates = await Promise.all(this.links().map((l) => this.pool.template(l.server).catch(() => undefined)));
    const has = (capability: string) => templates.some((t) => t && (t.initialize.capabilities as Item | undefined)?.[capability]);
    const subscribe = templates.some((t) => ((t?.initialize.capabilities as Item | undefined)?.resources as Item | undefined)?.subscribe);
    return {
      capabilities: {
        tools: { listChanged: true },
        prompts: { listChanged: true },
        resources: { listChanged: true, ...(subscribe ? { subscribe: true } : {}) },
        logging: {},
        ...(has("completions") ? { completions: {} } : {}),
      },
      serverInfo: { name: "mcpvisor", version: "0.1.0" },
      instructions: `Tools and prompts of ${this.serverLinks.size} sandboxed MCP servers (${[...this.serverLinks.keys()].join(", ")}), named <server>__<name>.`,
    };
  }

  protected async dispatch(
    message: JsonRpcMessage,
    method: string | undefined,
    id: RequestId | undefined,
    record: RequestRecord | undefined,
  ): Promise<void> {
    if (method === undefined) return this.fromClientResponse(message);
    const params = (message.params ?? {}) as Item;
    if (id === undefined) return this.fromClientNotification(method, params);
    const list = LISTS[method];
    if (list) return this.replyResult(id, { [list.key]: await this.aggregateList(method, list.key, list.named) });
    switch (method) {
      case "tools/call":
      case "prompts/get":
        return this.forwardNamed(message, id, params, record);
      case "resources/read":
      case "resources/subscribe":
      case "resources/unsubscribe":
        return this.forwardByUri(message, id, params.uri, record);
      case "completion/complete":
        return this.forwardCompletion(message, id, params, record);
      case "logging/setLevel":
        await Promise.all(this.links().map((l) => l.setPreamble("logging", { jsonrpc: "2.0", method, params })));
        return this.replyResult(id, {});
      default:
        return this.replyError(id, ErrorCode.MethodNotFound, `Method '${method}' is not supported on the aggregated endpoint; use /servers/<name>/mcp`);
    }
  }

  private async aggregateList(method: string, key: keyof Catalog, named: boolean): Promise<Item[]> {
    const perServer = await Promise.all(
      this.links().map(async (link) => {
        try {
          const items = link.live ? ((await link.request(method))[key] as Item[] | undefined) ?? [] : (await link.catalog())[key];
          return named ? items.map((item) => ({ ...item, name: qualify(link.server, String(item.name)) })) : items;
        } catch (err) {
          this.log.warn({ server: link.server, method, err: (err as Error).message }, "server left out of an aggregated list");
          return [];
        }
      }),
    );
    return perServer.flat();
  }

  private async forwardNamed(message: JsonRpcMessage, id: RequestId, params: Item, record?: RequestRecord): Promise<void> {
    const target = typeof params.name === "string" ? splitQualified(params.name) : undefined;
    const link = target && this.serverLinks.get(target.server);
    if (!target || !link) {
      const kind = message.method === "tools/call" ? "tool" : "prompt";
      return this.replyError(id, ErrorCode.InvalidParams, `Unknown ${kind} '${String(params.name)}': names here are <server>__<name>, servers: ${[...this.serverLinks.keys()].join(", ")}`);
    }
    if (message.method === "tools/call") {
      if (!(await this.toolCallAcceptable(id, link, target.name, String(params.name), params.arguments, record))) return;
    }
    await this.forward(link, id, { ...message, params: { ...params, name: target.name } }, record);
  }

  private async forwardByUri(message: JsonRpcMessage, id: RequestId, uri: unknown, record?: RequestRecord): Promise<void> {
    const link = typeof uri === "string" ? await this.ownerOf(uri) : undefined;
    if (!link) return this.replyError(id, ErrorCode.InvalidParams, `Unknown resource '${String(uri)}': resources/list shows the URIs there are`);
    await this.forward(link, id, message, record);
  }

  private async forwardCompletion(message: JsonRpcMessage, id: RequestId, params: Item, record?: RequestRecord): Promise<void> {
    const ref = (params.ref ?? {}) as Item;
    if (ref.type === "ref/resource") return this.forwardByUri(message, id, ref.uri, record);
    const target = typeof ref.name === "string" ? splitQualified(ref.name) : undefined;
    const link = target && this.serverLinks.get(target.server);
    if (!target || !link) return this.replyError(id, ErrorCode.InvalidParams, `Unknown prompt '${String(ref.name)}' in completion/complete`);
    await this.forward(link, id, { ...message, params: { ...params, ref: { ...ref, name: target.name } } }, record);
  }

  private async forward(link: ServerLink, id: RequestId, message: JsonRpcMessage, record?: RequestRecord): Promise<void> {
    this.routes.set(id, link.server);
    await link.send(message, record);
  }

  /** The server that listed `uri`, or whose URI template's fixed prefix it starts with. */
  private async ownerOf(uri: string): Promise<ServerLink | undefined> {
    for (const link of this.links()) if ((await link.catalog()).resources.some((r) => r.uri === uri)) return link;
    for (const link of this.links()) {
      for (const template of (await link.catalog()).resourceTemplates) {
        const prefix = String(template.uriTemplate ?? "").split("{")[0]!;
        if (prefix && uri.startsWith(prefix)) return link;
      }
    }
    return undefined;
  }

  private fromClientNotification(method: string, params: Item): void {
    if (method === "notifications/cancelled") {
      const server = this.routes.get(params.requestId as RequestId);
      if (server) this.serverLinks.get(server)!.sendIfLive({ jsonrpc: "2.0", method, params });
      return;
    }
    for (const link of this.links()) link.sendIfLive({ jsonrpc: "2.0", method, params });
  }

  private fromClientResponse(message: JsonRpcMessage): void {
    const upstream = this.upstreamRequests.get(String(message.id));
    if (!upstream) return;
    this.upstreamRequests.delete(String(message.id));
    upstream.link.sendIfLive({ ...message, id: upstream.id });
  }

  private async fromServer(link: ServerLink, message: JsonRpcMessage, guestMs?: number): Promise<void> {
    const id = message.id as RequestId | undefined;
    const refusal = this.refusedByClient(message);
    if (refusal) return link.sendIfLive(refusal);
    if (id !== undefined && "method" in message) {
      const ours = `${link.server}:${this.nextUpstreamId++}`;
      this.upstreamRequests.set(ours, { link, id });
      return this.deliver({ ...message, id: ours });
    }
    if (id !== undefined) this.routes.delete(id);
    await this.deliver(message, guestMs);
  }
}
