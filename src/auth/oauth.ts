import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload } from "jose";
import { LOCAL_PRINCIPAL } from "./principal.js";

export interface OAuthSettings {
  /** The authorization server's issuer identifier; tokens must carry it as `iss`. */
  issuer: string;
  /** Where its signing keys are; found from the issuer's metadata when not given. */
  jwksUrl?: string;
  /** Claim naming the tenant. */
  tenantClaim: string;
  /** Scopes every MCP request needs; a token without them gets 403 insufficient_scope. */
  requiredScopes: string[];
  /** Scope that makes the caller an admin (sees every tenant, may read /metrics). */
  adminScope: string;
}

export type TokenCheck =
  /** `acceptedUntil`: when this token stops being accepted (epoch ms): its expiry plus the clock tolerance. */
  | { ok: true; payload: JWTPayload; scopes: Set<string>; tenant: string; acceptedUntil: number }
  /** `unavailable`: the issuer's keys could not be had, so the token says nothing yet either way. */
  | { ok: false; reason: string; unavailable?: true };

/** Seconds a token's times may be off, for clocks that differ between issuer and gateway. */
const CLOCK_TOLERANCE_S = 5;

/** After the issuer's metadata could not be read, requests fail fast for this long before it is tried again. */
const DISCOVERY_RETRY_MS = 5_000;

/**
 * Validates OAuth 2.1 access tokens (JWTs) as a resource server, per the MCP authorization spec: the
 * signature against the issuer's JWKS, the issuer, the audience (this gateway's resource URL, so a token
 * minted for another service is refused), expiry and not-before. The token itself goes nowhere else.
 */
export class OAuthVerifier {
  private jwks: ReturnType<typeof createRemoteJWKSet> | undefined;
  private discoveryFailed: { at: number; reason: string } | undefined;

  constructor(private readonly settings: OAuthSettings) {}

  get issuer(): string {
    return this.settings.issuer;
  }

  get adminScope(): string {
    return this.settings.adminScope;
  }

  get requiredScopes(): readonly string[] {
    return this.settings.requiredScopes;
  }

  /** `audiences`: the resource URLs this request may be addressed as (any one must be in `aud`). */
  async verify(token: string, audiences: string[]): Promise<TokenCheck> {
    try {
      const { payload } = await jwtVerify(token, await this.keySet(), {
        issuer: this.settings.issuer,
        audience: audiences,
        requiredClaims: ["exp"],
        clockTolerance: CLOCK_TOLERANCE_S,
      });
      const tenant = payload[this.settings.tenantClaim];
      if (typeof tenant !== "string" || tenant === "") {
        return { ok: false, reason: `the token has no '${this.settings.tenantClaim}' claim naming a tenant` };
      }
      if (tenant === LOCAL_PRINCIPAL.tenant) return { ok: false, reason: `the tenant '${tenant}' is reserved for the unauthenticated local user` };
      const scope = typeof payload.scope === "string" ? payload.scope : "";
      const acceptedUntil = (payload.exp! + CLOCK_TOLERANCE_S) * 1000; // exp is a required claim
      return { ok: true, payload, tenant, scopes: new Set(scope.split(" ").filter(Boolean)), acceptedUntil };
    } catch (error) {
      // The issuer or its keys out of reach is the gateway's trouble, not a bad token (a 401 would send
      // clients through their whole authorization flow again).
      const unavailable = error instanceof IssuerUnavailable || error instanceof joseErrors.JWKSTimeout || error instanceof joseErrors.JWKSInvalid || !(error instanceof joseErrors.JOSEError);
      return unavailable ? { ok: false, reason: describe(error), unavailable } : { ok: false, reason: describe(error) };
    }
  }

  private async keySet(): Promise<ReturnType<typeof createRemoteJWKSet>> {
    if (this.jwks) return this.jwks;
    if (this.discoveryFailed && Date.now() - this.discoveryFailed.at < DISCOVERY_RETRY_MS) throw new IssuerUnavailable(this.discoveryFailed.reason);
    try {
      const url = this.settings.jwksUrl ?? (await discoverJwksUrl(this.settings.issuer));
      this.jwks = createRemoteJWKSet(new URL(url), { cooldownDuration: 30_000, timeoutDuration: 5_000 });
      this.discoveryFailed = undefined;
      return this.jwks;
    } catch (error) {
      this.discoveryFailed = { at: Date.now(), reason: (error as Error).message };
      throw new IssuerUnavailable(this.discoveryFailed.reason);
    }
  }
}

/** RFC 8414 metadata first, OpenID Connect discovery second, as the MCP spec asks of clients. */
async function discoverJwksUrl(issuer: string): Promise<string> {
  const base = new URL(issuer);
  const path = base.pathname === "/" ? "" : base.pathname;
  const candidates = [
    new URL(`/.well-known/oauth-authorization-server${path}`, base),
    new URL(`/.well-known/openid-configuration${path}`, base),
    new URL(`${path}/.well-known/openid-configuration`, base),
  ];
  for (const url of candidates) {
    const response = await fetch(url, { signal: AbortSignal.timeout(5_000) }).catch(() => undefined);
    if (!response?.ok) continue;
    const metadata = (await response.json().catch(() => ({}))) as { jwks_uri?: unknown };
    if (typeof metadata.jwks_uri === "string") return metadata.jwks_uri;
  }
  throw new Error(`the issuer ${issuer} publishes no metadata with a jwks_uri`);
}

class IssuerUnavailable extends Error {}

function describe(error: unknown): string {
  if (error instanceof IssuerUnavailable) return `the issuer's metadata cannot be read (${error.message})`;
  if (error instanceof joseErrors.JWKSTimeout) return "the issuer's keys (JWKS) did not arrive in time";
  if (error instanceof joseErrors.JWKSInvalid) return "the issuer's keys (JWKS) are not a valid key set";
  if (error instanceof joseErrors.JWTExpired) return "the token has expired";
  if (error instanceof joseErrors.JWTClaimValidationFailed) return `the token's '${error.claim}' claim is not accepted (${error.reason})`;
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) return "the token's signature does not verify";
  if (error instanceof joseErrors.JWKSNoMatchingKey) return "the token is signed with a key the issuer does not publish";
  if (error instanceof joseErrors.JOSEError) return `the token is not valid (${error.code})`;
  return `the token could not be checked: ${(error as Error).message}`;
}
