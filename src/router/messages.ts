import type {
  JSONRPCErrorResponse,
  JSONRPCMessage,
  JSONRPCNotification,
  JSONRPCRequest,
  JSONRPCResultResponse,
  RequestId,
} from "@modelcontextprotocol/sdk/types.js";

/** The router's messages: the SDK's JSON-RPC types (what faces parse with the SDK's schema). */
export type { JSONRPCMessage, JSONRPCNotification, JSONRPCRequest, RequestId };
export type JSONRPCResponse = JSONRPCResultResponse | JSONRPCErrorResponse;

export function isRequest(message: JSONRPCMessage): message is JSONRPCRequest {
  return "method" in message && "id" in message;
}

export function isNotification(message: JSONRPCMessage): message is JSONRPCNotification {
  return "method" in message && !("id" in message);
}

export function isResponse(message: JSONRPCMessage): message is JSONRPCResponse {
  return !("method" in message);
}

function isRequestId(value: unknown): value is RequestId {
  return typeof value === "string" || typeof value === "number";
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * A message from a guest as a JSON-RPC message, or undefined when it is none: the server in a guest is
 * untrusted, so its output is checked for the shape the router relies on (not the full MCP schema: the
 * client's SDK checks what it receives, and the router forwards what it does not understand).
 */
export function fromGuest(value: Record<string, unknown>): JSONRPCMessage | undefined {
  if (value.jsonrpc !== "2.0") return undefined;
  if ("params" in value && !isObject(value.params)) return undefined;
  if (typeof value.method === "string") {
    if ("id" in value && !isRequestId(value.id)) return undefined;
  } else if (!isRequestId(value.id) || !(isObject(value.result) || isObject(value.error))) {
    return undefined;
  }
  // Checked above for every field the router reads; the rest is the server's to get right.
  return value as JSONRPCMessage;
}

/** `params.name`, for methods that name a tool or prompt. */
export function nameParam(message: JSONRPCRequest): string | undefined {
  const name = message.params?.name;
  return typeof name === "string" ? name : undefined;
}
