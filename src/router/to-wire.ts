import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import { SandboxError } from "../sandbox/errors.js";
import { QuotaError } from "../tenancy/quota-error.js";

export interface JsonRpcErrorObject {
  code: number;
  message: string;
  data?: Record<string, unknown>;
}

/**
 * The one place internal errors become JSON-RPC errors: a code a client library understands, a message
 * a person can act on, and `data` a program can branch on (`retryable`).
 */
export function toJsonRpcError(error: unknown, server: string): JsonRpcErrorObject {
  if (error instanceof QuotaError) {
    return { code: error.code, message: error.message, data: { server, retryable: true, reason: `QUOTA_${error.kind.toUpperCase()}`, retryAfterSeconds: error.retryAfterSeconds } };
  }
  if (error instanceof SandboxError) {
    const data = { server, retryable: error.retryable, reason: error.code };
    switch (error.code) {
      case "CALL_TIMEOUT":
        return { code: ErrorCode.RequestTimeout, message: error.message, data };
      case "TEMPLATE_FAILED":
        return { code: ErrorCode.InternalError, message: `Server '${server}' is unavailable: ${error.message}`, data };
      case "BUSY":
        return { code: ErrorCode.InternalError, message: `Server '${server}' is busy: ${error.message}`, data };
      case "POOL_CLOSED":
        return { code: ErrorCode.InternalError, message: `Server '${server}' is not accepting calls: ${error.message}`, data };
      case "STATE_LOST":
        return {
          code: ErrorCode.InternalError,
          message: `The sandbox of this session for server '${server}' ended while idle (${error.message}); what it held (files, memory, processes) is gone. The next request starts a fresh sandbox.`,
          data,
        };
      default:
        return {
          code: ErrorCode.InternalError,
          message: `The sandbox for server '${server}' failed: ${error.message}. What it held is gone; the next request gets a fresh sandbox, retry it.`,
          data,
        };
    }
  }
  return {
    code: ErrorCode.InternalError,
    message: `Internal gateway error while serving '${server}': ${error instanceof Error ? error.message : String(error)}`,
    data: { server, retryable: false },
  };
}
