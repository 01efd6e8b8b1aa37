import { QuotaError } from "../tenancy/quota-error.js";
import { AccessError } from "./access-error.js";

/** Why a request is turned away at the edge: an HTTP status, its headers, and a JSON-RPC error. */
export interface Refusal {
  status: 401 | 403 | 429 | 503;
  code: number;
  message: string;
  headers: Record<string, string>;
  /** For the audit log: the credential that was presented, if it named one. */
  subject?: string;
}

/**
 * A tenant's limit (429 with Retry-After) or a server it may not use (403) as a refusal; undefined for
 * any other error, which the caller handles as before.
 */
export function refusalFor(error: unknown, subject?: string): Refusal | undefined {
  if (error instanceof QuotaError) {
    return { status: 429, code: error.code, message: error.message, headers: { "retry-after": String(error.retryAfterSeconds) }, subject };
  }
  if (error instanceof AccessError) return { status: 403, code: error.code, message: error.message, headers: {}, subject };
  return undefined;
}
