import type { AccessRules } from "./access-rules.js";

/** What a tenant may use at once, and how fast; every face and the router enforce the same numbers. */
export interface TenantLimits {
  /** Sustained MCP requests per second (a token bucket); past it, 429 with Retry-After. */
  requestsPerSecond: number;
  /** Requests a tenant may send in a burst above the sustained rate. */
  burst: number;
  /** Sandboxes running (not suspended) at once across the tenant's sessions. */
  maxSandboxes: number;
  /** Client sessions open at once, on every face together (a suspended one is still open). */
  maxSessions: number;
  /** Sessions saved to disk with a suspended sandbox; past it, a new session evicts the least recently saved. */
  maxSuspended: number;
  /** Long-lived streams at once: SSE streams, WebSockets and Streamable HTTP GET streams. */
  maxStreams: number;
}

export const UNLIMITED: TenantLimits = {
  requestsPerSecond: Number.POSITIVE_INFINITY,
  burst: Number.POSITIVE_INFINITY,
  maxSandboxes: Number.POSITIVE_INFINITY,
  maxSessions: Number.POSITIVE_INFINITY,
  maxSuspended: Number.POSITIVE_INFINITY,
  maxStreams: Number.POSITIVE_INFINITY,
};

/** Who is calling, as established at the edge; everything past the gateway trusts it. */
export interface Principal {
  /** Sessions, sandboxes and saved state belong to a tenant; no tenant sees another's. */
  tenant: string;
  /** Which credential: an API key's id or a token's `sub`, for the audit log (never the secret). */
  subject: string;
  /** Sees every tenant in the status page and `/api/*`, and may read `/metrics`. */
  admin: boolean;
  /** The hosted servers this tenant may use; `"*"` is all of them. */
  servers: readonly string[] | "*";
  limits: TenantLimits;
  /**
   * What the tenant may see and call (tools, prompts, resources), read when it is needed so a reloaded
   * tenants file applies to open sessions too; absent: everything.
   */
  rules?: () => AccessRules | undefined;
  /**
   * What the credential was, for connections that outlive the request that admitted them
   * (credential-watch.ts): the API key's hash, or when the access token stops being accepted (epoch ms).
   */
  credential?: { keySha256?: string; expiresAt?: number };
}

/**
 * The only principal when authentication is off: the local user, trusted with everything. Its tenant
 * name is reserved: no key or token can name it (sessions saved without authentication stay its own).
 */
export const LOCAL_PRINCIPAL: Principal = { tenant: "local", subject: "local", admin: true, servers: "*", limits: UNLIMITED };

export function mayUseServer(principal: Principal, server: string): boolean {
  return principal.servers === "*" || principal.servers.includes(server);
}
