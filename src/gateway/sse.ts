import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { SSEServerTransport } from "@modelcontextprotocol/sdk/server/sse.js";
import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import type { Context } from "hono";
import type { Logger } from "pino";
import type { Gatekeeper } from "../auth/gatekeeper.js";
import { AGGREGATE, type Route, type Router } from "../router/router.js";
import type { TenantCounter } from "../tenancy/tenant-counter.js";
import { edgeErrorResponse, type GatewayEnv } from "./admission.js";
import { errorReply, parseJsonRpc } from "./json-rpc.js";
import { SessionTable } from "./session-table.js";
import { jsonRpcHttpError } from "./streamable-http.js";

export type NodeContext = Context<GatewayEnv>;

export interface SseFaceOptions {
  idleMs: number;
  /** Each session's event stream counts against its tenant's open streams. */
  streams: TenantCounter;
  maxJsonDepth: number;
  /** Ends a stream whose credential is revoked or expires. */
  gatekeeper: Gatekeeper;
}

/**
 * The legacy HTTP+SSE face (MCP 2024-11-05) for older clients. `GET …/sse` opens a session's event
 * stream, whose first event names the URL to POST messages to (`…/messages?sessionId=…`). The SDK's
 * SSEServerTransport writes the stream to the Node response; POST bodies are parsed and validated
 * here, so a malformed one gets a 400 that says what is wrong. A session lives as long as its stream:
 * a client that disconnects ends it, and its VM.
 */
export class SseFace {
  private readonly sessions: SessionTable<SSEServerTransport>;

  constructor(
    private readonly router: Router,
    private readonly log: Logger,
    private readonly options: SseFaceOptions,
  ) {
    this.sessions = new SessionTable("sse", log, options.idleMs);
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /** GET: opens a session on `route`; its client will POST to `messagesPath`. */
  async open(c: NodeContext, route: Route, messagesPath: string): Promise<Response> {
    if (!this.router.hasRoute(route)) return noSuchServer(route);
    const principal = c.get("principal");
    let releaseStream: () => void;
    try {
      releaseStream = this.options.streams.take(principal.tenant, principal.limits.maxStreams);
    } catch (error) {
      return edgeErrorResponse(error)!;
    }
    const transport = new SSEServerTransport(messagesPath, c.env.outgoing);
    // Closed through its transport, which then writes nothing more to the response (a write after end
    // would be an 'error' event on it).
    const unwatch = this.options.gatekeeper.watch(principal, (why) => {
      this.log.info({ route, tenant: principal.tenant, why }, "SSE stream ended: its credential is no longer good");
      void transport.close();
    });
    c.env.outgoing.once("close", () => {
      releaseStream();
      unwatch();
    });
    const id = transport.sessionId;
    // Known before the stream names it to the client, so its first POST always finds the session.
    try {
      await this.sessions.open(id, route, transport, principal, () => this.router.connect(route, transport, "sse", { principal }));
    } catch (error) {
      const refused = edgeErrorResponse(error);
      if (refused && !c.env.outgoing.headersSent) {
        releaseStream();
        return refused;
      }
      this.log.error({ route, err: (error as Error).message }, "could not open an SSE session");
      const message = `Could not open a session on ${route === AGGREGATE ? "the aggregated endpoint" : `'${route}'`}: ${(error as Error).message}`;
      if (!c.env.outgoing.headersSent) return jsonRpcHttpError(500, ErrorCode.InternalError, message);
      c.env.outgoing.end();
    }
    return RESPONSE_ALREADY_SENT;
  }

  /** POST: one JSON-RPC message for the session named by `?sessionId=`; its answer goes down the stream. */
  async post(c: NodeContext, route: Route): Promise<Response> {
    if (!this.router.hasRoute(route)) return noSuchServer(route);
    const id = c.req.query("sessionId");
    if (!id) {
      return jsonRpcHttpError(400, ErrorCode.InvalidRequest, "Bad request: no sessionId query parameter; POST to the URL the SSE stream's endpoint event names");
    }
    const session = this.sessions.touch(id, route, c.get("principal").tenant);
    if (!session) {
      return jsonRpcHttpError(404, ErrorCode.ConnectionClosed, "Session not found: its SSE stream closed or it expired; open a new one with GET on the sse URL");
    }
    if (!/^application\/json\s*(;|$)/i.test(c.req.header("content-type") ?? "")) {
      return jsonRpcHttpError(415, ErrorCode.InvalidRequest, "Unsupported Media Type: send the JSON-RPC message with Content-Type: application/json");
    }
    const parsed = parseJsonRpc(await c.req.text(), this.options.maxJsonDepth);
    if (!parsed.ok) return new Response(errorReply(parsed), { status: 400, headers: { "content-type": "application/json" } });
    await session.transport.handleMessage(parsed.message);
    return new Response("Accepted", { status: 202 });
  }

  close(): Promise<void> {
    return this.sessions.close();
  }
}

function noSuchServer(route: Route): Response {
  return jsonRpcHttpError(404, ErrorCode.InvalidRequest, `No hosted server named '${route}'`);
}
