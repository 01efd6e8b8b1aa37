/** JSON-RPC codes in the implementation-defined range, one per kind of refusal at the edge. */
export const EDGE_ERROR = {
  unauthorized: -32001,
  forbidden: -32003,
  quota: -32029,
  /** Credentials cannot be checked right now (the OAuth issuer is out of reach). */
  unavailable: -32005,
} as const;

export type QuotaKind = "requests" | "sessions" | "streams" | "sandboxes";

/**
 * A tenant went past one of its limits. Nothing was done and nothing is lost: the client can retry
 * (after `retryAfterSeconds` for the request rate) or end sessions it no longer needs.
 */
export class QuotaError extends Error {
  readonly code = EDGE_ERROR.quota;

  constructor(
    readonly kind: QuotaKind,
    message: string,
    readonly retryAfterSeconds = 1,
  ) {
    super(message);
    this.name = "QuotaError";
  }
}
