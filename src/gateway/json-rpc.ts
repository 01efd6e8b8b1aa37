import { ErrorCode, JSONRPCMessageSchema, RELATED_TASK_META_KEY, type JSONRPCMessage, type RequestId } from "@modelcontextprotocol/sdk/types.js";
import { isObject } from "../router/messages.js";
import { jsonDeeperThan } from "./json-depth.js";
import { errorResponse, type JsonRpcErrorResponse } from "./to-wire.js";

export type ParsedMessage =
  | { ok: true; message: JSONRPCMessage }
  /** `id` is the offending message's id when it had a usable one (so the client's request fails, not hangs). */
  | { ok: false; id: RequestId | null; code: number; error: string };

/**
 * One JSON-RPC message from a face that carries raw text (a legacy SSE POST body, a WebSocket frame).
 * Not JSON is a parse error (-32700); JSON that is not one MCP message is an invalid request (-32600),
 * as JSON-RPC 2.0 defines them.
 */
export function parseJsonRpc(text: string, maxDepth: number): ParsedMessage {
  if (jsonDeeperThan(text, maxDepth)) {
    return { ok: false, id: null, code: ErrorCode.InvalidRequest, error: `Invalid request: JSON nested deeper than ${maxDepth} levels` };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return { ok: false, id: null, code: ErrorCode.ParseError, error: `Parse error: not valid JSON (${(error as Error).message})` };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    const what = Array.isArray(value) ? "an array (batches are not supported)" : `a ${value === null ? "null" : typeof value}`;
    return { ok: false, id: null, code: ErrorCode.InvalidRequest, error: `Invalid request: expected one JSON-RPC message (a JSON object), got ${what}` };
  }
  const message = toJsonRpcMessage(value);
  if (message) return { ok: true, message };
  const id = (value as { id?: unknown }).id;
  return {
    ok: false,
    id: typeof id === "string" || (typeof id === "number" && Number.isInteger(id)) ? id : null,
    code: ErrorCode.InvalidRequest,
    error: 'Invalid request: not a JSON-RPC 2.0 message (it needs "jsonrpc": "2.0" and a string "method", or an "id" with "result" or "error")',
  };
}

/**
 * `value` as one JSON-RPC message, or undefined when it is none. The SDK's schema decides; a request or
 * notification of the usual shape is accepted without it, by checks that admit only what the schema
 * admits (json-rpc.test.ts holds them to that). Why: on a gateway idle while a guest works, the schema's
 * first run per call costs some 40 µs of cold caches, a tenth of the whole overhead budget of a call.
 */
export function toJsonRpcMessage(value: unknown): JSONRPCMessage | undefined {
  if (isPlainRequest(value)) return value;
  const parsed = JSONRPCMessageSchema.safeParse(value);
  return parsed.success ? parsed.data : undefined;
}

const REQUEST_KEYS = new Set(["jsonrpc", "id", "method", "params"]);

/** `{"jsonrpc":"2.0", "method", "id"?, "params"?}` and nothing else, with a `_meta` of at most a progress token. */
function isPlainRequest(value: unknown): value is JSONRPCMessage {
  if (!isObject(value) || value.jsonrpc !== "2.0" || typeof value.method !== "string") return false;
  for (const key in value) if (!REQUEST_KEYS.has(key)) return false;
  if ("id" in value && !isRequestId(value.id)) return false;
  if (!("params" in value)) return true;
  const { params } = value;
  if (!isObject(params)) return false;
  if (!("_meta" in params)) return true;
  const meta = params._meta;
  // Anything else the schema looks into (a related task) is left to it.
  return isObject(meta) && !(RELATED_TASK_META_KEY in meta) && (!("progressToken" in meta) || isRequestId(meta.progressToken));
}

/** A request id or progress token: a string or an integer. */
function isRequestId(value: unknown): boolean {
  return typeof value === "string" || Number.isSafeInteger(value);
}

/** The JSON-RPC error response for a message `parseJsonRpc` refused. */
export function errorReply(refused: Extract<ParsedMessage, { ok: false }>): JsonRpcErrorResponse {
  return errorResponse(refused.id, { code: refused.code, message: refused.error });
}
