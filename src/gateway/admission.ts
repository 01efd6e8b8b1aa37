import type { HttpBindings } from "@hono/node-server";
import type { Context, MiddlewareHandler } from "hono";
import type { Gatekeeper } from "../auth/gatekeeper.js";
import { refusalFor, type Refusal } from "../auth/refusal.js";
import type { Principal } from "../auth/principal.js";
import type { AuditLog } from "../telemetry/audit-log.js";

/** The hono environment of every route: the node request, and who is calling once admitted. */
export type GatewayEnv = { Bindings: HttpBindings; Variables: { principal: Principal } };

/** A refusal as an HTTP response whose body is a JSON-RPC error (MCP clients parse those). */
export function refusalResponse(refusal: Pick<Refusal, "status" | "code" | "message" | "headers">): Response {
  return new Response(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: refusal.code, message: refusal.message } }), {
    status: refusal.status,
    headers: { "content-type": "application/json", ...refusal.headers },
  });
}

/** A tenant's limit or a forbidden server met past the gatekeeper (`refusalFor`), as a response. */
export function edgeErrorResponse(error: unknown): Response | undefined {
  const refusal = refusalFor(error);
  return refusal && refusalResponse(refusal);
}

/**
 * Admits a request (credential, then the tenant's request rate) or answers it with the refusal, which
 * also goes to the audit log. Admitted requests carry their principal as `c.get("principal")`.
 */
export function admission(gatekeeper: Gatekeeper, audit: AuditLog, options: { adminOnly?: boolean } = {}): MiddlewareHandler<GatewayEnv> {
  return async (c, next) => {
    const admitted = await gatekeeper.admit(c.req.header("authorization"), c.req.path);
    const refusal = admitted.ok ? (options.adminOnly ? gatekeeper.requireAdmin(admitted.principal, c.req.path) : undefined) : admitted.refusal;
    if (refusal) {
      audit.refused({ face: "http", path: c.req.path, status: refusal.status, reason: refusal.message, subject: refusal.subject, remoteAddress: remoteAddress(c) });
      return refusalResponse(refusal);
    }
    if (admitted.ok) c.set("principal", admitted.principal);
    await next();
  };
}

function remoteAddress(c: Context<GatewayEnv>): string | undefined {
  return c.env?.incoming?.socket.remoteAddress;
}
