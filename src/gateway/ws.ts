import { STATUS_CODES, type IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import type { Logger } from "pino";
import { WebSocketServer, type WebSocket } from "ws";
import { AccessError } from "../auth/access-error.js";
import type { Gatekeeper } from "../auth/gatekeeper.js";
import { refusalFor, type Refusal } from "../auth/refusal.js";
import { mayUseServer, type Principal } from "../auth/principal.js";
import { AGGREGATE, type Route, type Router } from "../router/router.js";
import type { AuditLog } from "../telemetry/audit-log.js";
import type { TenantCounter } from "../tenancy/tenant-counter.js";
import { forbidden, type HostPolicy } from "./host-check.js";
import { SessionTable } from "./session-table.js";
import { WebSocketServerTransport } from "./websocket-transport.js";

/** The subprotocol MCP WebSocket clients ask for (the SDK's WebSocketClientTransport does). */
const SUBPROTOCOL = "mcp";
/** RFC 6455 close code for a connection ended by policy: here, a revoked key or an expired token. */
const POLICY_VIOLATION = 1008;

export interface WebSocketFaceOptions {
  idleMs: number;
  maxMessageBytes: number;
  maxJsonDepth: number;
  hosts: HostPolicy;
  gatekeeper: Gatekeeper;
  audit: AuditLog;
  /** Each socket counts against its tenant's open streams. */
  streams: TenantCounter;
}

/**
 * The WebSocket face: one MCP session per socket, living as long as the socket does. Upgrades bypass
 * the HTTP middleware, so the Host/Origin check is made here too (browsers let any page open a
 * WebSocket to localhost; only the Origin tells it apart).
 */
export class WebSocketFace {
  private readonly wss: WebSocketServer;
  private readonly sessions: SessionTable<WebSocketServerTransport>;

  constructor(
    private readonly router: Router,
    private readonly log: Logger,
    private readonly options: WebSocketFaceOptions,
  ) {
    this.sessions = new SessionTable("websocket", log, options.idleMs);
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: options.maxMessageBytes,
      handleProtocols: (offered) => (offered.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
    });
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Takes over an HTTP upgrade request for `route` (undefined: the URL names no WebSocket endpoint). */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, route: Route | undefined): void {
    socket.on("error", (err) => this.log.debug({ err: err.message }, "WebSocket upgrade socket error"));
    const refusal = this.options.hosts.refusal(req.headers.host, req.headers.origin);
    if (refusal) {
      return refuse(socket, 403, forbidden(refusal));
    }
    if (route === undefined) return refuse(socket, 404, "No WebSocket endpoint here; use /ws (every server) or /servers/<name>/ws");
    if (!this.router.hasRoute(route)) return refuse(socket, 404, `No hosted server named '${route}'`);
    void this.admit(req, socket, head, route);
  }

  /** The same admission as every HTTP request: credential, request rate, server access, open streams. */
  private async admit(req: IncomingMessage, socket: Duplex, head: Buffer, route: Route): Promise<void> {
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    const admitted = await this.options.gatekeeper.admit(req.headers.authorization, path);
    const held = admitted.ok ? this.holdStream(admitted.principal, route) : admitted;
    if (!held.ok) {
      const { refusal } = held;
      this.options.audit.refused({ face: "websocket", path, status: refusal.status, reason: refusal.message, subject: refusal.subject, remoteAddress: req.socket.remoteAddress });
      return refuse(socket, refusal.status, refusal.message, refusal.code, refusal.headers);
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const unwatch = this.options.gatekeeper.watch(held.principal, (why) => {
        this.log.info({ route, tenant: held.principal.tenant, why }, "WebSocket closed: its credential is no longer good");
        ws.close(POLICY_VIOLATION, why);
      });
      ws.once("close", () => {
        held.release();
        unwatch();
      });
      void this.open(ws, route, held.principal);
    });
  }

  /** The socket's place among its tenant's open streams, if the tenant may use `route` and has one free. */
  private holdStream(principal: Principal, route: Route): { ok: true; principal: Principal; release: () => void } | { ok: false; refusal: Refusal } {
    try {
      if (route !== AGGREGATE && !mayUseServer(principal, route)) throw new AccessError(`Tenant '${principal.tenant}' may not use server '${route}'`);
      return { ok: true, principal, release: this.options.streams.take(principal.tenant, principal.limits.maxStreams) };
    } catch (error) {
      const refusal = refusalFor(error, principal.subject);
      if (!refusal) throw error;
      return { ok: false, refusal };
    }
  }

  private async open(ws: WebSocket, route: Route, principal: Principal): Promise<void> {
    const transport = new WebSocketServerTransport(ws, {
      maxJsonDepth: this.options.maxJsonDepth,
      charge: () => this.options.gatekeeper.charge(principal),
    });
    const id = transport.sessionId;
    ws.on("message", () => this.sessions.touch(id, route, principal.tenant));
    try {
      await this.sessions.open(id, route, transport, principal, () => this.router.connect(route, transport, "websocket", { principal }));
    } catch (error) {
      this.log.error({ route, err: (error as Error).message }, "could not open a WebSocket session");
      const reason = `could not open a session: ${(error as Error).message}`.replace(/[^\x20-\x7e]/g, "?").slice(0, 123);
      await transport.close(1011, reason);
    }
  }

  /** Ends every session (and so its VM), then the sockets. */
  async close(): Promise<void> {
    await this.sessions.close();
    for (const ws of this.wss.clients) ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }
}

/** Answers an upgrade request with a plain HTTP error whose body is a JSON-RPC error. */
function refuse(socket: Duplex, status: number, message: string, code: number = ErrorCode.InvalidRequest, headers: Record<string, string> = {}): void {
  const body = JSON.stringify({ jsonrpc: "2.0", id: null, error: { code, message } });
  const extra = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join("");
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\n${extra}` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
