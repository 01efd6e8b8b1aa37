import { ErrorCode, JSONRPCMessageSchema, type JSONRPCMessage, type RequestId } from "@modelcontextprotocol/sdk/types.js";
import { jsonDeeperThan } from "./json-depth.js";

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
  const parsed = JSONRPCMessageSchema.safeParse(value);
  if (parsed.success) return { ok: true, message: parsed.data };
  const id = (value as { id?: unknown }).id;
  return {
    ok: false,
    id: typeof id === "string" || (typeof id === "number" && Number.isInteger(id)) ? id : null,
    code: ErrorCode.InvalidRequest,
    error: 'Invalid request: not a JSON-RPC 2.0 message (it needs "jsonrpc": "2.0" and a string "method", or an "id" with "result" or "error")',
  };
}

/** The JSON-RPC error response (JSON text) for a message `parseJsonRpc` refused. */
export function errorReply(refused: Extract<ParsedMessage, { ok: false }>): string {
  return jsonRpcError(refused.id, refused.code, refused.error);
}

/** A JSON-RPC error response as JSON text; `id` null when no request's id can be named. */
export function jsonRpcError(id: RequestId | null, code: number, message: string): string {
  return JSON.stringify({ jsonrpc: "2.0", id, error: { code, message } });
}
