import type { IncomingHttpHeaders } from "node:http";
import { classifyInboundRequest } from "@modelcontextprotocol/server";
import type { JSONRPCNotification, JSONRPCRequest, RequestId } from "../router/messages.js";
import { isObject } from "../router/messages.js";
import { decodeHeaderValue, MODERN_PROTOCOL_VERSIONS, ModernErrorCode } from "../router/modern-protocol.js";
import type { JsonRpcErrorObject } from "./to-wire.js";

/** Where one HTTP POST goes: the 2025 era's handling, the 2026-07-28 era's, or a 400/404 refusal. */
export type EraOutcome =
  | { era: "legacy" }
  | { era: "modern"; message: JSONRPCRequest | JSONRPCNotification }
  | { era: "refused"; status: number; id: RequestId | null; error: JsonRpcErrorObject };

/** The envelope key every 2026-07-28 request carries in `params._meta`. */
const VERSION_META_KEY = "io.modelcontextprotocol/protocolVersion";

/** Methods whose `Mcp-Name` header mirrors a body field (SEP-2243). */
const NAME_SOURCE: Record<string, "name" | "uri" | "taskId"> = {
  "tools/call": "name",
  "prompts/get": "name",
  "resources/read": "uri",
  "tasks/get": "taskId",
  "tasks/update": "taskId",
  "tasks/cancel": "taskId",
};

/**
 * Whether a POST may belong to the 2026-07-28 era, without parsing it: its body names the envelope key,
 * or its header a modern revision. Everything else is 2025-era traffic, as it was before (the hot path of
 * a legacy session's calls pays nothing more than this).
 */
export function mayBeModern(body: string, headers: IncomingHttpHeaders): boolean {
  const version = headers["mcp-protocol-version"];
  return body.includes(VERSION_META_KEY) || (typeof version === "string" && version.trim() >= "2026");
}

/**
 * Which era a POST belongs to, by the spec's rules (body first, the `MCP-Protocol-Version` header as a
 * cross-check): the SDK's `classifyInboundRequest` decides, then this checks what it leaves to the HTTP
 * entry. A modern request must name a revision served here, and carry `MCP-Protocol-Version`,
 * `Mcp-Method` and, for a named call, an `Mcp-Name` that matches the body. Refusals carry the request's id.
 */
export function eraOf(headers: IncomingHttpHeaders, body: unknown): EraOutcome {
  return classify(body, {
    protocolVersionHeader: header(headers, "mcp-protocol-version"),
    mcpMethodHeader: header(headers, "mcp-method"),
    mcpNameHeader: header(headers, "mcp-name"),
  });
}

/** The era of one message on a face without HTTP headers (WebSocket, stdio): the body alone decides. */
export function messageEraOf(message: unknown): EraOutcome {
  return classify(message, undefined);
}

function classify(body: unknown, headers: { protocolVersionHeader?: string; mcpMethodHeader?: string; mcpNameHeader?: string } | undefined): EraOutcome {
  const request = { httpMethod: "POST", ...headers, body };
  const id = idOf(body);
  const outcome = classifyInboundRequest(request);
  if (outcome.kind === "legacy") return { era: "legacy" };
  if (outcome.kind === "reject") {
    return refusedWith(outcome.httpStatus, id, { code: outcome.code, message: outcome.message, ...(isObject(outcome.data) ? { data: outcome.data } : {}) });
  }
  const { message } = outcome;
  const requested = outcome.classification.revision;
  if (requested !== undefined && !MODERN_PROTOCOL_VERSIONS.includes(requested)) {
    return refusedWith(400, id, {
      code: ModernErrorCode.UnsupportedProtocolVersion,
      message: `Unsupported protocol version ${requested}; this gateway serves ${MODERN_PROTOCOL_VERSIONS.join(", ")} without a session, and 2025-11-25 and older after initialize`,
      data: { supported: [...MODERN_PROTOCOL_VERSIONS], requested },
    });
  }
  if (outcome.messageKind === "notification" || !headers) return { era: "modern", message };
  const mismatch = headerMismatch(headers.protocolVersionHeader, headers.mcpMethodHeader, headers.mcpNameHeader, outcome.message);
  if (mismatch) return refusedWith(400, id, { code: ModernErrorCode.HeaderMismatch, message: `Bad Request: ${mismatch}`, data: {} });
  return { era: "modern", message };
}

/** What SEP-2243 requires of a modern request's headers that the classifier does not check. */
function headerMismatch(version: string | undefined, method: string | undefined, name: string | undefined, message: JSONRPCRequest): string | undefined {
  if (version === undefined) return "the MCP-Protocol-Version header is required on every 2026-07-28 request";
  if (method === undefined) return `the Mcp-Method header is required (the body names method ${message.method})`;
  const field = NAME_SOURCE[message.method];
  const value = field ? message.params?.[field] : undefined;
  if (typeof value !== "string") return undefined;
  if (name === undefined) return `the Mcp-Name header is required when params.${field} is "${value}"`;
  const decoded = decodeHeaderValue(name.trim());
  if (decoded === undefined) return "the Mcp-Name header carries an invalid =?base64?…?= value";
  if (decoded !== value) return `the Mcp-Name header names "${decoded}" but params.${field} is "${value}"`;
  return undefined;
}

function refusedWith(status: number, id: RequestId | null, error: JsonRpcErrorObject): EraOutcome {
  return { era: "refused", status, id, error };
}

function idOf(body: unknown): RequestId | null {
  const id = isObject(body) ? body.id : undefined;
  return typeof id === "string" || typeof id === "number" ? id : null;
}

/** A header node:http gives as a string (repeated ones joined, as web Headers do); surrounding whitespace is not part of it. */
function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  if (value === undefined) return undefined;
  return (Array.isArray(value) ? value.join(", ") : value).trim();
}
