import type { ClusterUnavailableError } from "../cluster/errors.js";
import type { QuotaError } from "../tenancy/quota-error.js";
import type { AccessError } from "./access-error.js";

/**
 * A credential turned away at the edge: missing or not valid (401), lacking a scope (403), or not
 * checkable right now (503). `headers` carry the challenge (WWW-Authenticate) or when to retry; the
 * gateway's to-wire.ts makes the reply.
 */
export class CredentialError extends Error {
  constructor(
    readonly status: 401 | 403 | 503,
    readonly code: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "CredentialError";
  }
}

/** Why the gatekeeper turned a request away, and (for the audit log) the credential presented, if it named one. */
export interface Refusal {
  error: CredentialError | AccessError | QuotaError | ClusterUnavailableError;
  subject?: string;
}
