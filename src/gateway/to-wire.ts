import type { ServerResponse } from "node:http";
import { ErrorCode, type RequestId } from "@modelcontextprotocol/sdk/types.js";
import { AccessError } from "../auth/access-error.js";
import { CredentialError } from "../auth/refusal.js";
import { WireError } from "../router/errors.js";
import { SandboxError } from "../sandbox/errors.js";
import { QuotaError } from "../tenancy/quota-error.js";
import { ClusterUnavailableError } from "../cluster/errors.js";

export interface JsonRpcErrorObject {
  code: number;
  message: string;
  data?: Record<string, unknown>;
}

/** What a failure looks like on the wire: the HTTP status (for faces that have one), headers, and the JSON-RPC error. */
export interface WireFailure {
  status: number;
  headers: Record<string, string>;
  error: JsonRpcErrorObject;
}

/**
 * The one place errors become replies: every face and the router call this, so a failure reads the same
 * on every transport. `server` names the hosted server the request was for, when there is one. `status`
 * matters only where the failure refuses the HTTP request itself; an error answering a request inside a
 * session travels in a 200 response (or on a stream) like any other JSON-RPC reply.
 */
export function toWire(error: unknown, server?: string): WireFailure {
  const about = server ? { server } : {};
  if (error instanceof QuotaError) {
    return {
      status: 429,
      headers: { "retry-after": String(error.retryAfterSeconds) },
      error: { code: error.code, message: error.message, data: { ...about, retryable: true, reason: `QUOTA_${error.kind.toUpperCase()}`, retryAfterSeconds: error.retryAfterSeconds } },
    };
  }
  if (error instanceof ClusterUnavailableError) {
    return {
      status: 503,
      headers: { "retry-after": String(error.retryAfterSeconds) },
      error: { code: error.code, message: error.message, data: { ...about, retryable: true, reason: "CLUSTER_UNAVAILABLE" } },
    };
  }
  if (error instanceof AccessError) {
    return { status: 403, headers: {}, error: { code: error.code, message: error.message, data: { ...about, retryable: false, reason: "FORBIDDEN" } } };
  }
  if (error instanceof CredentialError) {
    const reason = error.status === 401 ? "UNAUTHORIZED" : error.status === 403 ? "FORBIDDEN" : "AUTH_UNAVAILABLE";
    return { status: error.status, headers: error.headers, error: { code: error.code, message: error.message, data: { retryable: error.status === 503, reason } } };
  }
  if (error instanceof WireError) {
    return { status: 200, headers: {}, error: { code: error.rpcCode, message: error.message, data: { retryable: false, ...error.data } } };
  }
  if (error instanceof SandboxError) return { status: statusOf(error), headers: {}, error: sandboxFailure(error, server) };
  const message = error instanceof Error ? error.message : String(error);
  return {
    status: 500,
    headers: {},
    error: { code: ErrorCode.InternalError, message: `Internal gateway error${server ? ` while serving '${server}'` : ""}: ${message}`, data: { ...about, retryable: false } },
  };
}

/** Whether `error` turns a request away at the edge (a credential, a tenant's limit, a server it may not use): an answer, not a fault. */
export function isRefusal(error: unknown): error is QuotaError | AccessError | CredentialError | ClusterUnavailableError {
  return error instanceof QuotaError || error instanceof AccessError || error instanceof CredentialError || error instanceof ClusterUnavailableError;
}

/** A refusal of an HTTP request made by a face itself (a bad header, a missing session), with no error object behind it. */
export function refused(status: number, code: number, message: string, headers: Record<string, string> = {}): WireFailure {
  return { status, headers, error: { code, message } };
}

function statusOf(error: SandboxError): number {
  if (error.code === "UNKNOWN_SERVER") return 404;
  if (error.code === "BUSY" || error.code === "POOL_CLOSED") return 503;
  return 500;
}

/** A sandbox-layer failure as a client should read it: the internal message is kept, framed once. */
function sandboxFailure(error: SandboxError, server: string | undefined): JsonRpcErrorObject {
  const data = { ...(server ? { server } : {}), retryable: error.retryable, reason: error.code };
  const name = server ? `server '${server}'` : "the server";
  switch (error.code) {
    case "CALL_TIMEOUT":
      return { code: ErrorCode.RequestTimeout, message: error.message, data };
    case "UNKNOWN_SERVER":
      return { code: ErrorCode.InvalidParams, message: error.message, data };
    case "TEMPLATE_FAILED":
      return { code: ErrorCode.InternalError, message: `${capitalized(name)} is unavailable: ${error.message}`, data };
    case "BUSY":
      return { code: ErrorCode.InternalError, message: `${capitalized(name)} is busy: ${error.message}`, data };
    case "POOL_CLOSED":
      return { code: ErrorCode.InternalError, message: capitalized(error.message), data };
    case "STATE_LOST":
      return {
        code: ErrorCode.InternalError,
        message: `The sandbox of this session for ${name} ended while idle (${error.message}); what it held (files, memory, processes) is gone. The next request starts a fresh sandbox.`,
        data,
      };
    case "SANDBOX_CLOSED":
      return { code: ErrorCode.InternalError, message: `${capitalized(error.message)}. Nothing was answered; retrying starts a fresh sandbox.`, data };
    case "GUEST_RPC":
      // The sandbox is fine: the server in it refused a request the gateway made on the client's behalf.
      return { code: ErrorCode.InternalError, message: `${capitalized(name)} answered with an error: ${error.message}`, data };
    default:
      return {
        code: ErrorCode.InternalError,
        message: `The sandbox for ${name} failed (${error.message}). What it held is gone; the next request gets a fresh sandbox, retry it.`,
        data,
      };
  }
}

function capitalized(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** A JSON-RPC error response; `id` is null when no request can be named (JSON-RPC 2.0 §5). */
export interface JsonRpcErrorResponse<Id extends RequestId | null = RequestId | null> {
  jsonrpc: "2.0";
  id: Id;
  error: JsonRpcErrorObject;
}

/** The JSON-RPC error response: the one place its envelope is built. */
export function errorResponse<Id extends RequestId | null>(id: Id, error: JsonRpcErrorObject): JsonRpcErrorResponse<Id> {
  return { jsonrpc: "2.0", id, error };
}

/** The body of an HTTP response that refuses the request as a whole: id null, as no one message is answered. */
export function failureBody(failure: WireFailure): string {
  return JSON.stringify(errorResponse(null, failure.error));
}

/** A refusal as the whole node:http response (Streamable HTTP). */
export function writeFailure(res: ServerResponse, failure: WireFailure): void {
  const body = failureBody(failure);
  res.writeHead(failure.status, { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...failure.headers }).end(body);
}

/** A refusal as a web Response (the routes served through hono). */
export function failureResponse(failure: WireFailure): Response {
  return new Response(failureBody(failure), { status: failure.status, headers: { "content-type": "application/json", ...failure.headers } });
}
