import { STATUS_CODES, type IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import type { Logger } from "pino";
import { WebSocketServer, type WebSocket } from "ws";
import { AccessError } from "../auth/access-error.js";
import { mayUseServer, type Principal } from "../auth/principal.js";
import type { ModernSessions } from "../router/modern-sessions.js";
import { AGGREGATE, type Route, type Router } from "../router/router.js";
import type { TenantHolds } from "../tenancy/tenant-counter.js";
import { edgeRequest, type EdgeRequest } from "./admission.js";
import { noSuchServer, SessionFace, type FaceOptions } from "./face.js";
import { searchesTools } from "./face-route.js";
import { acceptModernMessages } from "./message-eras.js";
import { failureBody, isRefusal, refused, type WireFailure } from "./to-wire.js";
import { WebSocketServerTransport } from "./websocket-transport.js";

/** The subprotocol MCP WebSocket clients ask for (the SDK's WebSocketClientTransport does). */
const SUBPROTOCOL = "mcp";
/** RFC 6455 close code for a connection ended by policy: here, a revoked key or an expired token. */
const POLICY_VIOLATION = 1008;

export interface WebSocketFaceOptions extends FaceOptions {
  maxMessageBytes: number;
  /** Each socket counts against its tenant's open streams. */
  streams: TenantHolds;
  /** Where the socket's 2026-07-28 requests are served. */
  modern: ModernSessions;
}

/**
 * The WebSocket face: one MCP session per socket, living as long as the socket does. Upgrades bypass
 * the HTTP middleware, so they pass the same admission step here (the Host/Origin check matters most:
 * browsers let any page open a WebSocket to localhost; only the Origin tells it apart).
 */
export class WebSocketFace extends SessionFace<WebSocketServerTransport, WebSocketFaceOptions> {
  readonly name = "websocket";
  private readonly wss: WebSocketServer;

  constructor(router: Router, log: Logger, options: WebSocketFaceOptions) {
    super(router, log, options);
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: options.maxMessageBytes,
      handleProtocols: (offered) => (offered.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
    });
  }

  /** Takes over an HTTP upgrade request for `route` (undefined: the URL names no WebSocket endpoint). */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, route: Route | undefined): void {
    socket.on("error", (err) => this.log.debug({ err: err.message }, "WebSocket upgrade socket error"));
    void this.admit(req, socket, head, route);
  }

  /** The same admission as every HTTP request, then server access and the tenant's open streams. */
  private async admit(req: IncomingMessage, socket: Duplex, head: Buffer, route: Route | undefined): Promise<void> {
    const request = edgeRequest(this.name, req);
    const pending = this.options.edge.admit(request);
    const admitted = pending instanceof Promise ? await pending : pending;
    if (!admitted.ok) return refuse(socket, admitted.failure);
    if (route === undefined) return refuse(socket, refused(404, ErrorCode.InvalidRequest, "No WebSocket endpoint here; use /ws (every server) or /servers/<name>/ws"));
    if (!this.router.hasRoute(route)) return refuse(socket, noSuchServer(route));
    const held = await this.holdStream(request, admitted.principal, route);
    if (!held.ok) return refuse(socket, held.failure);
    const { principal } = admitted;
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      ws.once("close", held.release);
      this.options.edge.watch(this.name, principal, ws, (why) => ws.close(POLICY_VIOLATION, why));
      void this.open(ws, route, principal, searchesTools(req.url));
    });
  }

  /** The socket's place among its tenant's open streams, if the tenant may use `route` and has one free. */
  private async holdStream(request: EdgeRequest, principal: Principal, route: Route): Promise<{ ok: true; release: () => void } | { ok: false; failure: WireFailure }> {
    try {
      if (route !== AGGREGATE && !mayUseServer(principal, route)) throw new AccessError(`Tenant '${principal.tenant}' may not use server '${route}'`);
      return { ok: true, release: await this.options.streams.take(principal.tenant, principal.limits.maxStreams) };
    } catch (error) {
      if (!isRefusal(error)) throw error;
      return this.options.edge.refuse(request, error, principal.subject);
    }
  }

  private async open(ws: WebSocket, route: Route, principal: Principal, toolSearch: boolean): Promise<void> {
    const transport = new WebSocketServerTransport(ws, {
      maxJsonDepth: this.options.maxJsonDepth,
      charge: () => this.options.edge.charge(principal),
    });
    const id = transport.sessionId;
    ws.on("message", () => this.sessions.touch(id, route, principal.tenant));
    try {
      await this.sessions.open(id, route, transport, principal, () => this.router.connect(route, transport, this.name, { principal, toolSearch }));
      acceptModernMessages(transport, principal, route, this.options.modern, this.name, this.log, toolSearch);
    } catch (error) {
      this.log.error({ route, err: (error as Error).message }, "could not open a WebSocket session");
      const reason = `could not open a session: ${(error as Error).message}`.replace(/[^\x20-\x7e]/g, "?").slice(0, 123);
      await transport.close(1011, reason);
    }
  }

  /** Ends every session (and so its VM), then the sockets. */
  override async close(): Promise<void> {
    await super.close();
    for (const ws of this.wss.clients) ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }
}

/** Answers an upgrade request with a plain HTTP error whose body is a JSON-RPC error. */
function refuse(socket: Duplex, failure: WireFailure): void {
  const body = failureBody(failure);
  const extra = Object.entries(failure.headers).map(([name, value]) => `${name}: ${value}\r\n`).join("");
  socket.end(
    `HTTP/1.1 ${failure.status} ${STATUS_CODES[failure.status]}\r\nContent-Type: application/json\r\n${extra}` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
