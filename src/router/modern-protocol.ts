import { isObject, type JSONRPCRequest } from "./messages.js";

/**
 * MCP 2026-07-28, the stateless era (docs/design/protocol-eras.md): what the router needs to know of it.
 * Requests carry their protocol version and the client's capabilities in `_meta`; there is no initialize,
 * no session id, no ping.
 */
export const MODERN_PROTOCOL_VERSIONS: readonly string[] = ["2026-07-28"];

export const ModernErrorCode = {
  HeaderMismatch: -32020,
  MissingRequiredClientCapability: -32021,
  UnsupportedProtocolVersion: -32022,
} as const;

export const META = {
  protocolVersion: "io.modelcontextprotocol/protocolVersion",
  clientCapabilities: "io.modelcontextprotocol/clientCapabilities",
  logLevel: "io.modelcontextprotocol/logLevel",
  serverInfo: "io.modelcontextprotocol/serverInfo",
  subscriptionId: "io.modelcontextprotocol/subscriptionId",
} as const;

/** Methods of the 2025 era the 2026-07-28 revision removed: a modern request for one is a method not found. */
export const REMOVED_METHODS = new Set(["initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"]);

/** Results a client may cache (SEP-2549): they carry `ttlMs` and `cacheScope`. */
export const CACHEABLE_METHODS = new Set(["tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read", "server/discover"]);

/** Syslog order (RFC 5424), most verbose first, as MCP's logging levels are. */
const LOG_LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];

/** What one modern request declared about its client. */
export interface ModernRequestMeta {
  capabilities: Record<string, unknown>;
  /** The least severe log level the client wants to hear of during this request; none without the key. */
  logLevel: number | undefined;
}

export function modernMetaOf(request: JSONRPCRequest): ModernRequestMeta {
  const meta = isObject(request.params?._meta) ? request.params._meta : {};
  const capabilities = meta[META.clientCapabilities];
  const level = LOG_LEVELS.indexOf(String(meta[META.logLevel]));
  return { capabilities: isObject(capabilities) ? capabilities : {}, logLevel: level >= 0 ? level : undefined };
}

/** Whether a server's log line is as severe as `wanted` (a LOG_LEVELS index) or more. */
export function logLevelAtLeast(level: unknown, wanted: number): boolean {
  return LOG_LEVELS.indexOf(String(level)) >= wanted;
}

/** What a `subscriptions/listen` stream carries (SEP-2575's SubscriptionFilter). */
export interface SubscriptionFilter {
  toolsListChanged?: boolean;
  promptsListChanged?: boolean;
  resourcesListChanged?: boolean;
  resourceSubscriptions?: string[];
}

const LIST_CHANGED: Record<string, keyof SubscriptionFilter> = {
  "notifications/tools/list_changed": "toolsListChanged",
  "notifications/prompts/list_changed": "promptsListChanged",
  "notifications/resources/list_changed": "resourcesListChanged",
};

/** Notifications that go to listen streams, never with a request (a 2025 server sends them wherever). */
export function isSubscriptionNotification(method: string): boolean {
  return method in LIST_CHANGED || method === "notifications/resources/updated";
}

/** Whether a listen stream with `filter` asked for this notification. */
export function filterAccepts(filter: SubscriptionFilter, method: string, params: Record<string, unknown> | undefined): boolean {
  const flag = LIST_CHANGED[method];
  if (flag) return filter[flag] === true;
  return method === "notifications/resources/updated" && (filter.resourceSubscriptions ?? []).includes(String(params?.uri));
}

/** The part of a requested filter the server's capabilities can deliver: nothing it does not advertise is promised. */
export function honoredFilter(requested: unknown, capabilities: Record<string, unknown>): SubscriptionFilter {
  const wanted = isObject(requested) ? requested : {};
  const can = (feature: string, flag: string) => isObject(capabilities[feature]) && (capabilities[feature] as Record<string, unknown>)[flag] === true;
  const honored: SubscriptionFilter = {};
  if (wanted.toolsListChanged === true && can("tools", "listChanged")) honored.toolsListChanged = true;
  if (wanted.promptsListChanged === true && can("prompts", "listChanged")) honored.promptsListChanged = true;
  if (wanted.resourcesListChanged === true && can("resources", "listChanged")) honored.resourcesListChanged = true;
  const uris = Array.isArray(wanted.resourceSubscriptions) ? wanted.resourceSubscriptions.filter((u): u is string => typeof u === "string") : [];
  if (uris.length > 0 && can("resources", "subscribe")) honored.resourceSubscriptions = uris;
  return honored;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** A header value as the client meant it: `=?base64?…?=` carries UTF-8 in Base64 (SEP-2243), anything else is literal. */
export function decodeHeaderValue(value: string): string | undefined {
  if (!value.startsWith("=?base64?") || !value.endsWith("?=")) return value;
  const encoded = value.slice("=?base64?".length, -"?=".length);
  if (!BASE64.test(encoded)) return undefined;
  const text = Buffer.from(encoded, "base64").toString("utf8");
  return text.includes("\uFFFD") ? undefined : text;
}

/**
 * SEP-2243's custom headers: a tool's argument whose schema names `x-mcp-header: "Region"` travels in an
 * `Mcp-Param-Region` header too, so routers can read it. When the body carries the argument, the header
 * must be there and say the same (numbers compare as numbers). Top-level arguments only. Returns what
 * disagrees, or undefined.
 */
export function paramHeaderMismatch(inputSchema: unknown, args: unknown, header: (name: string) => string | undefined): string | undefined {
  const properties = isObject(inputSchema) && isObject(inputSchema.properties) ? inputSchema.properties : {};
  for (const [argument, schema] of Object.entries(properties)) {
    if (!isObject(schema) || typeof schema["x-mcp-header"] !== "string") continue;
    const value = isObject(args) ? args[argument] : undefined;
    if (value === undefined || value === null || typeof value === "object") continue;
    const name = `mcp-param-${schema["x-mcp-header"].toLowerCase()}`;
    const sent = header(name);
    if (sent === undefined) return `the body carries ${argument}=${JSON.stringify(value)} but the Mcp-Param-${schema["x-mcp-header"]} header is absent`;
    const decoded = decodeHeaderValue(sent.trim());
    if (decoded === undefined) return `the Mcp-Param-${schema["x-mcp-header"]} header carries an invalid =?base64?…?= value`;
    const same = typeof value === "number" && /^-?\d+(\.\d+)?$/.test(decoded) ? Number(decoded) === value : decoded === String(value);
    if (!same) return `the Mcp-Param-${schema["x-mcp-header"]} header says ${JSON.stringify(decoded)} but the body carries ${argument}=${JSON.stringify(value)}`;
  }
  return undefined;
}
