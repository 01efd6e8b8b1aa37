import type { IncomingMessage } from "node:http";
import type { HttpBindings } from "@hono/node-server";
import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import type { Context, MiddlewareHandler } from "hono";
import type { Logger } from "pino";
import { whenAdmitted, type Gatekeeper } from "../auth/gatekeeper.js";
import type { Principal } from "../auth/principal.js";
import type { AuditLog } from "../telemetry/audit-log.js";
import { forbidden, type HostPolicy } from "./host-check.js";
import { failureResponse, refused, toWire, type WireFailure } from "./to-wire.js";

/** The hono environment of every route: the node request, and who is calling once admitted. */
export type GatewayEnv = { Bindings: HttpBindings; Variables: { principal: Principal } };

/** A request as the edge sees it, whichever server took it (node:http, hono, a WebSocket upgrade). */
export interface EdgeRequest {
  /** The face it is for, as the audit log names it. */
  face: string;
  path: string;
  host: string | undefined;
  origin: string | undefined;
  authorization: string | undefined;
  remoteAddress: string | undefined;
  /** SEP-2243's Mcp-Method and Mcp-Name (2026-07-28 POSTs carry them): what a refusal was of, without the body. */
  mcpMethod?: string;
  mcpName?: string;
}

/** An admitted request's principal, or the reply that refuses it (already audited). */
export type Admitted = { ok: true; principal: Principal } | { ok: false; failure: WireFailure };

export interface AdmitOptions {
  /** Whether the Host/Origin check is made here (hono makes it for every route, before this). Default true. */
  hosts?: boolean;
  /** Only an admin credential may pass (`/metrics`). */
  adminOnly?: boolean;
  /** Whether the request counts against its tenant's rate: not when a peer node forwards it (it was counted there). */
  charge?: boolean;
}

/** The EdgeRequest of a node:http request (Streamable HTTP, WebSocket upgrades). */
export function edgeRequest(face: string, req: IncomingMessage): EdgeRequest {
  return {
    face,
    path: (req.url ?? "/").split("?", 1)[0]!,
    host: req.headers.host,
    origin: req.headers.origin,
    authorization: req.headers.authorization,
    remoteAddress: req.socket.remoteAddress,
    ...mcpHeaders(req.headers["mcp-method"], req.headers["mcp-name"]),
  };
}

function mcpHeaders(method: string | string[] | undefined, name: string | string[] | undefined): Pick<EdgeRequest, "mcpMethod" | "mcpName"> {
  return {
    ...(typeof method === "string" ? { mcpMethod: method.trim() } : {}),
    ...(typeof name === "string" ? { mcpName: name.trim() } : {}),
  };
}

/** The EdgeRequest of a route served through hono (legacy SSE, the API). */
export function edgeRequestOf(c: Context<GatewayEnv>): EdgeRequest {
  return {
    face: "http",
    path: c.req.path,
    host: c.req.header("host"),
    origin: c.req.header("origin"),
    authorization: c.req.header("authorization"),
    remoteAddress: c.env?.incoming?.socket.remoteAddress,
    ...mcpHeaders(c.req.header("mcp-method"), c.req.header("mcp-name")),
  };
}

/**
 * The one admission step of every face: the Host/Origin check (DNS rebinding), the credential and the
 * tenant's request rate (the gatekeeper), an audit line for every refusal, and the watch that ends a
 * connection outliving its request once its credential stops being good. Streamable HTTP calls it from
 * node:http, the legacy SSE and API routes through hono (`middleware`), WebSocket upgrades from the
 * upgrade handler.
 */
export class Edge {
  constructor(
    private readonly hosts: HostPolicy,
    private readonly gatekeeper: Gatekeeper,
    private readonly audit: AuditLog,
    private readonly log: Logger,
  ) {}

  /** Decided in this tick unless an OAuth access token must be verified: the API-key path never waits. */
  admit(request: EdgeRequest, options: AdmitOptions = {}): Admitted | Promise<Admitted> {
    if (options.hosts !== false) {
      const failure = this.hostRefusal(request);
      if (failure) return this.refused(request, failure);
    }
    return whenAdmitted(this.gatekeeper.admit(request.authorization, request.path, { charge: options.charge ?? true }), (admitted): Admitted => {
      if (!admitted.ok) return this.refuse(request, admitted.refusal.error, admitted.refusal.subject);
      const refusal = options.adminOnly ? this.gatekeeper.requireAdmin(admitted.principal, request.path) : undefined;
      return refusal ? this.refuse(request, refusal.error, refusal.subject) : admitted;
    });
  }

  /** A refusal met past the credential (a server the tenant may not use, one of its limits), audited like the rest. */
  refuse(request: EdgeRequest, error: unknown, subject?: string): { ok: false; failure: WireFailure } {
    return this.refused(request, toWire(error), subject);
  }

  /** Charges a message on a connection admitted before (a WebSocket frame) to its tenant's rate; throws QuotaError. */
  charge(principal: Principal): void | Promise<void> {
    return this.gatekeeper.charge(principal);
  }

  /**
   * Ends `connection` (a WebSocket, an SSE stream, a GET stream) with `end` when its credential is
   * revoked or expires; stops watching when it closes.
   */
  watch(face: string, principal: Principal, connection: { once(event: "close", listener: () => void): unknown }, end: (why: string) => void): void {
    const unwatch = this.gatekeeper.watch(principal, (why) => {
      this.log.info({ face, tenant: principal.tenant, why }, "connection ended: its credential is no longer good");
      end(why);
    });
    connection.once("close", unwatch);
  }

  /** hono: admits the request (the Host/Origin check is `hostCheck`'s) and sets `c.get("principal")`. */
  middleware(options: { adminOnly?: boolean } = {}): MiddlewareHandler<GatewayEnv> {
    return async (c, next) => {
      const admitted = await this.admit(edgeRequestOf(c), { ...options, hosts: false });
      if (!admitted.ok) return failureResponse(admitted.failure);
      c.set("principal", admitted.principal);
      await next();
    };
  }

  /** hono: the Host/Origin check alone, for every route but those probes and scrapers reach by any name. */
  hostCheck(): MiddlewareHandler<GatewayEnv> {
    return async (c, next) => {
      const request = edgeRequestOf(c);
      const failure = this.hostRefusal(request);
      if (failure) return failureResponse(this.refused(request, failure).failure);
      await next();
    };
  }

  private hostRefusal(request: EdgeRequest): WireFailure | undefined {
    const why = this.hosts.refusal(request.host, request.origin);
    return why === undefined ? undefined : refused(403, ErrorCode.InvalidRequest, forbidden(why));
  }

  private refused(request: EdgeRequest, failure: WireFailure, subject?: string): { ok: false; failure: WireFailure } {
    const { face, path, remoteAddress, mcpMethod, mcpName } = request;
    const what = { ...(mcpMethod ? { method: mcpMethod } : {}), ...(mcpName ? { name: mcpName } : {}) };
    this.audit.refused({ face, path, status: failure.status, reason: failure.error.message, subject, remoteAddress, ...what });
    return { ok: false, failure };
  }
}
