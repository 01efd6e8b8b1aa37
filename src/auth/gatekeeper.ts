import { AccessRules } from "./access-rules.js";
import type { OAuthVerifier } from "./oauth.js";
import { ApiKeys, KEY_PREFIX } from "./api-keys.js";
import { CredentialWatch } from "./credential-watch.js";
import { LOCAL_PRINCIPAL, type Principal } from "./principal.js";
import { PROTECTED_RESOURCE_METADATA, resourcePathFor } from "./resource-paths.js";
import { limitsOf, type TenantsFile } from "./tenants-file.js";
import { ClusterUnavailableError } from "../cluster/errors.js";
import { RateLimiter, type RequestRate } from "../tenancy/rate-limiter.js";
import { EDGE_ERROR, QuotaError } from "../tenancy/quota-error.js";
import { AccessError } from "./access-error.js";
import { CredentialError, type Refusal } from "./refusal.js";

export type { Refusal };

export type Admission = { ok: true; principal: Principal } | { ok: false; refusal: Refusal };

/** `then` for an admission that is decided now or later (only OAuth tokens take a while): now stays now. */
export function whenAdmitted<T>(admission: Admission | Promise<Admission>, next: (admission: Admission) => T): T | Promise<T> {
  return admission instanceof Promise ? admission.then(next) : next(admission);
}

export interface GatekeeperOptions {
  /** Tenants' request rates: counted in this process when absent, or across the cluster. */
  rate?: RequestRate;
  /** API keys and per-tenant settings; absent means no API keys. */
  tenants?: TenantsFile;
  /** OAuth access-token validation; absent means no OAuth. */
  oauth?: OAuthVerifier;
  /** This gateway's public base URL (no trailing slash): the OAuth audience and metadata URLs. */
  publicUrl: () => string;
}

/**
 * Who may come in, decided once per request at the edge and the same way for every face: an API key
 * or an OAuth access token in `Authorization: Bearer …`, then the tenant's request rate. With neither
 * keys nor OAuth configured everyone is the local user (the gateway then listens on loopback only).
 */
export class Gatekeeper {
  private tenants: TenantsFile | undefined;
  private keys: ApiKeys;
  private readonly rate: RequestRate;
  private readonly connections = new CredentialWatch();

  constructor(private readonly options: GatekeeperOptions) {
    this.tenants = options.tenants;
    this.rate = options.rate ?? new RateLimiter();
    this.keys = new ApiKeys(options.tenants?.keys ?? []);
  }

  /** Whether any credential is required at all: a tenants file, even one with no keys, closes the gate. */
  get enabled(): boolean {
    return this.tenants !== undefined || this.options.oauth !== undefined;
  }

  /**
   * Takes an edited tenants file: new keys work and removed ones stop working from the next request on;
   * connections opened with a removed key are ended now.
   */
  replaceTenants(tenants: TenantsFile): void {
    this.tenants = tenants;
    this.keys = new ApiKeys(tenants.keys);
    this.connections.recheck(
      ({ tenant, credential }) => credential?.keySha256 === undefined || this.keys.holds(credential.keySha256, tenant),
      "the API key was revoked",
    );
  }

  /**
   * Watches a connection that outlives the request that admitted it (a WebSocket, an SSE stream): `end`
   * closes it when its credential stops being good. Returns the call that stops watching it.
   */
  watch(principal: Principal, end: (why: string) => void): () => void {
    return this.connections.hold(principal, end);
  }

  /**
   * Authenticates and charges the tenant's request rate. Synchronous unless an OAuth access token must
   * be verified, so a face can go on reading the request in the same tick.
   */
  admit(authorization: string | undefined, path: string, options: { charge: boolean } = { charge: true }): Admission | Promise<Admission> {
    const authenticated = this.authenticate(authorization, path);
    const next = (admission: Admission) => (options.charge ? this.charged(admission) : admission);
    return authenticated instanceof Promise ? authenticated.then(next) : next(authenticated);
  }

  /** Charges the request to its tenant's rate: in this tick, unless the rate is counted across a cluster. */
  private charged(admission: Admission): Admission | Promise<Admission> {
    if (!admission.ok) return admission;
    const refuse = (error: unknown): Admission => {
      if (!(error instanceof QuotaError || error instanceof ClusterUnavailableError)) throw error;
      return { ok: false, refusal: { error, subject: admission.principal.subject } };
    };
    try {
      const taken = this.charge(admission.principal);
      return taken instanceof Promise ? taken.then(() => admission, refuse) : admission;
    } catch (error) {
      return refuse(error);
    }
  }

  /** Charges one request to the tenant's rate (for messages on a connection admitted before); throws QuotaError. */
  charge(principal: Principal): void | Promise<void> {
    return this.rate.take(principal.tenant, principal.limits);
  }

  authenticate(authorization: string | undefined, path: string): Admission | Promise<Admission> {
    if (!this.enabled) return { ok: true, principal: LOCAL_PRINCIPAL };
    const token = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "")?.[1];
    if (!token) return this.unauthorized(path, "Authentication required: send Authorization: Bearer <API key or access token>");
    const key = this.keys.find(token);
    if (key) return { ok: true, principal: { ...this.tenantPrincipal(key.tenant, `key:${key.id}`, undefined), credential: { keySha256: key.sha256 } } };
    const oauth = this.options.oauth;
    if (!oauth || token.startsWith(KEY_PREFIX)) return this.unauthorized(path, "The API key is not valid", "invalid_token");
    return this.verifyAccessToken(oauth, token, path);
  }

  private async verifyAccessToken(oauth: OAuthVerifier, token: string, path: string): Promise<Admission> {
    const base = this.options.publicUrl();
    const resource = resourcePathFor(path);
    const check = await oauth.verify(token, [...new Set([base, `${base}/`, `${base}${resource}`])]);
    if (!check.ok && check.unavailable) {
      const message = `Access tokens cannot be checked right now: ${check.reason}; retry shortly`;
      return { ok: false, refusal: { error: new CredentialError(503, EDGE_ERROR.unavailable, message, { "retry-after": "5" }) } };
    }
    if (!check.ok) return this.unauthorized(path, `The access token is not accepted: ${check.reason}`, "invalid_token");
    const missing = oauth.requiredScopes.filter((s) => !check.scopes.has(s));
    const subject = `oauth:${check.payload.sub ?? "?"}`;
    if (missing.length) return this.insufficientScope(path, oauth.requiredScopes, `The access token lacks the scope(s) ${missing.join(", ")}`, subject);
    const principal = { ...this.tenantPrincipal(check.tenant, subject, toolScopes(check.scopes)), credential: { expiresAt: check.acceptedUntil } };
    return { ok: true, principal: check.scopes.has(oauth.adminScope) ? { ...principal, admin: true } : principal };
  }

  /** A refusal for a route only admins may use (e.g. `/metrics`), or undefined when `principal` may. */
  requireAdmin(principal: Principal, path: string): Refusal | undefined {
    if (principal.admin) return undefined;
    const scope = this.options.oauth?.adminScope;
    const message = `Only an admin may read ${path}${scope ? ` (scope ${scope})` : ""}`;
    return scope ? this.insufficientScope(path, [scope], message, principal.subject).refusal : { error: new AccessError(message), subject: principal.subject };
  }

  /** RFC 9728 protected-resource metadata for `resourcePath` ("" for the gateway as a whole). */
  protectedResourceMetadata(resourcePath: string): Record<string, unknown> {
    const oauth = this.options.oauth;
    return {
      resource: `${this.options.publicUrl()}${resourcePath}`,
      ...(oauth ? { authorization_servers: [oauth.issuer], scopes_supported: [...new Set([...oauth.requiredScopes, oauth.adminScope])] } : {}),
      bearer_methods_supported: ["header"],
      resource_name: "mcpvisor",
    };
  }

  /** `scopeTools`: a token's `tools:<pattern>` scopes, when it has any. */
  private tenantPrincipal(tenant: string, subject: string, scopeTools: string[] | undefined): Principal {
    const entry = this.tenants?.tenants[tenant];
    return {
      tenant,
      subject,
      admin: entry?.admin ?? false,
      servers: entry?.servers ?? "*",
      limits: limitsOf(this.tenants, tenant),
      rules: () => this.rulesOf(tenant, scopeTools),
    };
  }

  /** The tenant's access rules in the tenants file now (it may have been reloaded since the session opened). */
  private rulesOf(tenant: string, scopeTools: string[] | undefined): AccessRules | undefined {
    const file = this.tenants;
    const access = file?.tenants[tenant]?.access;
    if (!access && !scopeTools) return undefined;
    if (!file) return new AccessRules({}, scopeTools);
    let cached = this.rulesCache.get(file);
    if (!cached) this.rulesCache.set(file, (cached = new Map()));
    const key = `${tenant}\0${scopeTools?.join(" ") ?? ""}`;
    let rules = cached.get(key);
    if (!rules) cached.set(key, (rules = new AccessRules(access ?? {}, scopeTools)));
    return rules;
  }

  /** Compiled rules by tenants file version: a reload makes new ones, the old go with the old file. */
  private readonly rulesCache = new WeakMap<TenantsFile, Map<string, AccessRules>>();

  private challenge(path: string, extra: string): string {
    const params = [`realm="mcpvisor"`];
    if (this.options.oauth) params.push(`resource_metadata="${this.options.publicUrl()}${PROTECTED_RESOURCE_METADATA}${resourcePathFor(path)}"`);
    return `Bearer ${[...params, extra].filter(Boolean).join(", ")}`;
  }

  private unauthorized(path: string, message: string, error?: string): Admission {
    const extra = error ? `error="${error}", error_description="${quoteSafe(message)}"` : "";
    return { ok: false, refusal: { error: new CredentialError(401, EDGE_ERROR.unauthorized, message, { "www-authenticate": this.challenge(path, extra) }) } };
  }

  private insufficientScope(path: string, scopes: readonly string[], message: string, subject: string): { ok: false; refusal: Refusal } {
    const extra = `error="insufficient_scope", scope="${scopes.join(" ")}", error_description="${quoteSafe(message)}"`;
    return { ok: false, refusal: { error: new CredentialError(403, EDGE_ERROR.forbidden, message, { "www-authenticate": this.challenge(path, extra) }), subject } };
  }
}

function quoteSafe(text: string): string {
  return text.replace(/["\\\r\n]/g, "'");
}

/** A token's scopes of the form `tools:<server>/<glob>`: when it has any, only those tools. */
function toolScopes(scopes: Set<string>): string[] | undefined {
  const patterns = [...scopes].filter((s) => s.startsWith("tools:")).map((s) => s.slice("tools:".length));
  return patterns.length > 0 ? patterns : undefined;
}
