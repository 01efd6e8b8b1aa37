import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { SSEServerTransport } from "@modelcontextprotocol/sdk/server/sse.js";
import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import type { Context } from "hono";
import { AGGREGATE, type Route } from "../router/router.js";
import type { TenantHolds } from "../tenancy/tenant-counter.js";
import { edgeRequestOf, type GatewayEnv } from "./admission.js";
import { noSuchServer, SessionFace, type FaceOptions } from "./face.js";
import { errorReply, parseJsonRpc } from "./json-rpc.js";
import { failureResponse, isRefusal, refused } from "./to-wire.js";

export type NodeContext = Context<GatewayEnv>;

/** `edge` admits nothing here (hono's middleware did): it audits refusals met later and watches each stream's credential. */
export interface SseFaceOptions extends FaceOptions {
  /** Each session's event stream counts against its tenant's open streams. */
  streams: TenantHolds;
}

/**
 * The legacy HTTP+SSE face (MCP 2024-11-05) for older clients. `GET …/sse` opens a session's event
 * stream, whose first event names the URL to POST messages to (`…/messages?sessionId=…`). The SDK's
 * SSEServerTransport writes the stream to the Node response; POST bodies are parsed and validated
 * here, so a malformed one gets a 400 that says what is wrong. A session lives as long as its stream:
 * a client that disconnects ends it, and its VM.
 */
export class SseFace extends SessionFace<SSEServerTransport, SseFaceOptions> {
  readonly name = "sse";

  /** GET: opens a session on `route`; its client will POST to `messagesPath`. */
  async open(c: NodeContext, route: Route, messagesPath: string): Promise<Response> {
    if (!this.router.hasRoute(route)) return failureResponse(noSuchServer(route));
    const principal = c.get("principal");
    const refuse = (error: unknown) => failureResponse(this.options.edge.refuse(edgeRequestOf(c), error, principal.subject).failure);
    let releaseStream: () => void;
    try {
      releaseStream = await this.options.streams.take(principal.tenant, principal.limits.maxStreams);
    } catch (error) {
      if (!isRefusal(error)) throw error;
      return refuse(error);
    }
    const response = c.env.outgoing;
    const transport = new SSEServerTransport(messagesPath, response);
    response.once("close", releaseStream);
    // Closed through its transport, which then writes nothing more to the response (a write after end
    // would be an 'error' event on it).
    this.options.edge.watch(this.name, principal, response, () => void transport.close());
    const id = transport.sessionId;
    // Known before the stream names it to the client, so its first POST always finds the session.
    try {
      await this.sessions.open(id, route, transport, principal, () => this.router.connect(route, transport, "sse", { principal }));
    } catch (error) {
      if (isRefusal(error) && !response.headersSent) return refuse(error);
      this.log.error({ route, err: (error as Error).message }, "could not open an SSE session");
      const message = `Could not open a session on ${route === AGGREGATE ? "the aggregated endpoint" : `'${route}'`}: ${(error as Error).message}`;
      if (!response.headersSent) return failureResponse(refused(500, ErrorCode.InternalError, message));
      response.end();
    }
    return RESPONSE_ALREADY_SENT;
  }

  /** POST: one JSON-RPC message for the session named by `?sessionId=`; its answer goes down the stream. */
  async post(c: NodeContext, route: Route): Promise<Response> {
    if (!this.router.hasRoute(route)) return failureResponse(noSuchServer(route));
    const id = c.req.query("sessionId");
    if (!id) {
      return failureResponse(refused(400, ErrorCode.InvalidRequest, "Bad request: no sessionId query parameter; POST to the URL the SSE stream's endpoint event names"));
    }
    const session = this.sessions.touch(id, route, c.get("principal").tenant);
    if (!session) {
      return failureResponse(refused(404, ErrorCode.ConnectionClosed, "Session not found: its SSE stream closed or it expired; open a new one with GET on the sse URL"));
    }
    if (!/^application\/json\s*(;|$)/i.test(c.req.header("content-type") ?? "")) {
      return failureResponse(refused(415, ErrorCode.InvalidRequest, "Unsupported Media Type: send the JSON-RPC message with Content-Type: application/json"));
    }
    const parsed = parseJsonRpc(await c.req.text(), this.options.maxJsonDepth);
    if (!parsed.ok) return Response.json(errorReply(parsed), { status: 400 });
    await session.transport.handleMessage(parsed.message);
    return new Response("Accepted", { status: 202 });
  }
}
