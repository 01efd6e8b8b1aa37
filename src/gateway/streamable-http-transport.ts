import { randomUUID } from "node:crypto";
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import { MAX_BATCH_SIZE } from "@modelcontextprotocol/sdk/server/requestBody.js";
import { isJsonContentType } from "@modelcontextprotocol/sdk/shared/mediaType.js";
import type { Transport, TransportSendOptions } from "@modelcontextprotocol/sdk/shared/transport.js";
import {
  DEFAULT_NEGOTIATED_PROTOCOL_VERSION,
  ErrorCode,
  SUPPORTED_PROTOCOL_VERSIONS,
  type JSONRPCMessage,
  type JSONRPCRequest,
  type MessageExtraInfo,
  type RequestId,
} from "@modelcontextprotocol/sdk/types.js";
import type { EventId, SessionEventStore, StreamId } from "./event-store.js";
import { toJsonRpcMessage } from "./json-rpc.js";
import { frame, SseResponse } from "./sse-response.js";
import { refused, writeFailure } from "./to-wire.js";

/** The session's GET stream, for messages not related to a request. */
const STANDALONE: StreamId = "_GET_stream";
/** Clients before this protocol version cannot take an SSE event without data (a priming event). */
const PRIMING_SINCE = "2025-11-25";
/** The SDK's code for header-level refusals (Accept, Content-Type, protocol version, session state). */
const REFUSED = -32000;
const SSE_HEADERS: OutgoingHttpHeaders = {
  "content-type": "text/event-stream",
  "cache-control": "no-cache, no-transform",
  connection: "keep-alive",
  "x-accel-buffering": "no",
};

export const SESSION_NOT_FOUND = "Session not found: it ended or expired; start a new one with initialize";

export interface SessionOptions {
  id: string;
  events: SessionEventStore;
  /** Called when the session's initialize arrives, before it is handled, so the session can be found by id at once. */
  onInitialized: () => void;
  /** The client ended the session with DELETE; awaited before the transport closes and the 200 goes out. */
  onDeleted: () => Promise<void>;
}

/**
 * MCP's Streamable HTTP transport (2025-11-25), server side, straight on node:http: what the SDK's
 * WebStandardStreamableHTTPServerTransport does for clients, without building a web Request/Response
 * and web streams for every call (that and hono's adapter were most of the gateway's overhead per call).
 * With `session`, POST answers stream as SSE with event ids kept in the session's event store, GET opens
 * the session's own stream or resumes a broken one from `Last-Event-ID`, DELETE ends the session.
 * Without, it is stateless: it answers one POST with a JSON body. Which session a request belongs to
 * (Mcp-Session-Id) is the face's business: a request handed here is this session's.
 */
export class StreamableHttpServerTransport implements Transport {
  onmessage?: (message: JSONRPCMessage, extra?: MessageExtraInfo) => void;
  onclose?: () => void;
  onerror?: (error: Error) => void;
  /** Set once the session is initialized, as the SDK's transport does. */
  sessionId: string | undefined;
  private initialized = false;
  private closed = false;
  /** Each client request not answered yet, by id, with the POST it came in. */
  private readonly exchanges = new Map<RequestId, Exchange>();
  /** The SSE responses open now, by stream; a resumed stream takes its broken predecessor's place. */
  private readonly streams = new Map<StreamId, SseResponse>();

  constructor(private readonly session?: SessionOptions) {}

  /** Nothing to start: requests come in through `handleRequest`. */
  async start(): Promise<void> {}

  /** One HTTP request to this session (or, stateless, the one request); `body` is a POST's text, read by the face. */
  async handleRequest(req: IncomingMessage, res: ServerResponse, body: string | undefined): Promise<void> {
    if (this.closed) return writeFailure(res, refused(404, ErrorCode.ConnectionClosed, SESSION_NOT_FOUND));
    if (req.method === "POST") return this.post(req, res, body ?? "");
    if (this.session && req.method === "GET") return this.get(req, res, this.session);
    if (this.session && req.method === "DELETE") return this.delete(req, res, this.session);
    writeFailure(res, refused(405, REFUSED, "Method not allowed.", { allow: this.session ? "GET, POST, DELETE" : "POST" }));
  }

  /**
   * Initializes a session saved before a gateway restart with what its client declared back then: the
   * session's handler needs an initialize, and the client must not see one (it was answered long ago).
   */
  restore(initialize: JSONRPCRequest): Promise<void> {
    this.initialize();
    return new Promise((resolve) => {
      this.exchanges.set(initialize.id, { kind: "collect", ids: [initialize.id], answers: new Map(), deliver: () => resolve() });
      this.onmessage?.(initialize);
    });
  }

  async send(message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    const answer = isAnswer(message);
    const requestId = answer ? (message as { id: RequestId }).id : options?.relatedRequestId;
    if (requestId === undefined) return this.sendUnrelated(message, answer);
    const exchange = this.exchanges.get(requestId);
    if (!exchange) throw new Error(`No open HTTP request for request id ${String(requestId)} (answered already, or the session closed)`);
    if (answer) this.exchanges.delete(requestId);
    if (exchange.kind === "collect") {
      // A JSON body carries the answers only; what the server says on the way has nowhere to go.
      if (!answer) return;
      exchange.answers.set(requestId, message);
      if (exchange.answers.size === exchange.ids.length) exchange.deliver(exchange.ids.map((id) => exchange.answers.get(id)!));
      return;
    }
    const stream = this.streams.get(exchange.streamId);
    const last = answer && (exchange.unanswered.delete(requestId), exchange.unanswered.size === 0);
    if (last) this.streams.delete(exchange.streamId);
    // Answered within the hold with nothing before it: one JSON body, and no stream anyone could resume.
    if (last && stream?.held) return stream.answerAsJson(message);
    stream?.prime();
    // Stored even when the stream is gone, so the client can resume it and get this.
    const { events } = this.session!;
    const eventId = events.add(exchange.streamId, message);
    if (!last) return stream?.write(message, eventId);
    // Once the whole stream is handed to the network there is nothing left to resume: its events go, so
    // a long session holds only what a broken stream may still ask for, not its last 1000 answers.
    stream?.end(message, eventId, () => events.dropStream(exchange.streamId));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const stream of this.streams.values()) stream.end();
    this.streams.clear();
    this.exchanges.clear();
    this.onclose?.();
  }

  private async post(req: IncomingMessage, res: ServerResponse, body: string): Promise<void> {
    const accept = req.headers.accept;
    if (!accept?.includes("application/json") || !accept.includes("text/event-stream")) {
      return writeFailure(res, refused(406, REFUSED, "Not Acceptable: Client must accept both application/json and text/event-stream"));
    }
    if (!isJsonContentType(req.headers["content-type"])) {
      return writeFailure(res, refused(415, REFUSED, "Unsupported Media Type: Content-Type must be application/json"));
    }
    let raw: unknown;
    try {
      raw = JSON.parse(body);
    } catch {
      return writeFailure(res, refused(400, ErrorCode.ParseError, "Parse error: Invalid JSON"));
    }
    if (Array.isArray(raw) && raw.length === 0) {
      return writeFailure(res, refused(400, ErrorCode.InvalidRequest, "Invalid Request: an empty batch holds no message"));
    }
    if (Array.isArray(raw) && raw.length > MAX_BATCH_SIZE) {
      return writeFailure(res, refused(400, ErrorCode.InvalidRequest, `Invalid Request: Batch must not exceed ${MAX_BATCH_SIZE} messages`));
    }
    const messages: JSONRPCMessage[] = [];
    for (const item of Array.isArray(raw) ? raw : [raw]) {
      const message = toJsonRpcMessage(item);
      if (!message) {
        // -32700 as the SDK's transport answers it, so clients see what they always saw.
        const what = 'Parse error: Invalid JSON-RPC message (it needs "jsonrpc": "2.0" and a string "method", or an "id" with "result" or "error")';
        return writeFailure(res, refused(400, ErrorCode.ParseError, what));
      }
      messages.push(message);
    }
    const init = messages.find((m): m is JSONRPCRequest => "method" in m && m.method === "initialize" && "id" in m);
    if (init) {
      if (this.initialized) return writeFailure(res, refused(400, ErrorCode.InvalidRequest, "Invalid Request: Server already initialized"));
      if (messages.length > 1) return writeFailure(res, refused(400, ErrorCode.InvalidRequest, "Invalid Request: Only one initialization request is allowed"));
      this.initialize();
    } else {
      const refusal = this.refuseAfterInitialize(req);
      if (refusal) return writeFailure(res, refused(400, REFUSED, refusal));
    }
    const extra: MessageExtraInfo = { requestInfo: { headers: req.headers } };
    const ids = messages.filter((m) => "method" in m && "id" in m).map((m) => (m as JSONRPCRequest).id);
    if (ids.length === 0) {
      // Notifications and answers only: nothing will come back on this request.
      for (const message of messages) this.onmessage?.(message, extra);
      res.statusCode = 202;
      res.end();
      return;
    }
    if (!this.session) {
      const exchange: Exchange = {
        kind: "collect",
        ids,
        answers: new Map(),
        deliver: (answers) => {
          const json = JSON.stringify(answers.length === 1 ? answers[0] : answers);
          res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(json) }).end(json);
        },
      };
      for (const id of ids) this.exchanges.set(id, exchange);
    } else {
      const streamId = randomUUID();
      const stream = this.open(streamId, res);
      const asked = init ? init.params?.protocolVersion : header(req, "mcp-protocol-version");
      const version = typeof asked === "string" ? asked : DEFAULT_NEGOTIATED_PROTOCOL_VERSION;
      // A priming event gives the client an event id to resume from before anything else is sent.
      const { events } = this.session;
      stream.hold(version >= PRIMING_SINCE ? () => events.add(streamId, undefined) : undefined);
      const exchange: Exchange = { kind: "stream", streamId, unanswered: new Set(ids) };
      for (const id of ids) this.exchanges.set(id, exchange);
    }
    for (const message of messages) this.onmessage?.(message, extra);
  }

  private get(req: IncomingMessage, res: ServerResponse, session: SessionOptions): void {
    if (!req.headers.accept?.includes("text/event-stream")) {
      return writeFailure(res, refused(406, REFUSED, "Not Acceptable: Client must accept text/event-stream"));
    }
    const refusal = this.refuseAfterInitialize(req);
    if (refusal) return writeFailure(res, refused(400, REFUSED, refusal));
    const lastEventId = header(req, "last-event-id");
    if (lastEventId) return this.resume(res, session.events, lastEventId);
    if (this.streams.has(STANDALONE)) {
      return writeFailure(res, refused(409, REFUSED, "Conflict: Only one SSE stream is allowed per session"));
    }
    this.open(STANDALONE, res).start("");
  }

  /** A client whose stream broke reconnects with the last event id it got: it gets what followed on that stream. */
  private resume(res: ServerResponse, events: SessionEventStore, lastEventId: EventId): void {
    const streamId = events.streamOf(lastEventId);
    if (!streamId) {
      return writeFailure(res, refused(400, REFUSED, `Invalid event ID: '${lastEventId}' is unknown to this session or too old to replay`));
    }
    if (this.streams.has(streamId)) {
      return writeFailure(res, refused(409, REFUSED, "Conflict: Stream already has an active connection"));
    }
    const stream = this.open(streamId, res);
    stream.start(events.after(lastEventId).map((event) => frame(event.message, event.id)).join(""));
    // A request stream whose requests are all answered (the answers were just replayed) has nothing more to come.
    const answered = streamId !== STANDALONE && ![...this.exchanges.values()].some((e) => e.kind === "stream" && e.streamId === streamId);
    if (answered) {
      this.streams.delete(streamId);
      stream.end();
    }
  }

  private async delete(req: IncomingMessage, res: ServerResponse, session: SessionOptions): Promise<void> {
    const refusal = this.refuseAfterInitialize(req);
    if (refusal) return writeFailure(res, refused(400, REFUSED, refusal));
    try {
      await session.onDeleted();
    } finally {
      await this.close();
    }
    res.statusCode = 200;
    res.end();
  }

  /** Server messages that belong to no request (list changes, logging) go on the session's GET stream. */
  private sendUnrelated(message: JSONRPCMessage, answer: boolean): void {
    if (answer) throw new Error("Cannot send a response on the standalone SSE stream");
    if (!this.session) return; // stateless: there is no stream to carry it
    const eventId = this.session.events.add(STANDALONE, message);
    this.streams.get(STANDALONE)?.write(message, eventId);
  }

  private initialize(): void {
    this.initialized = true;
    if (!this.session) return;
    this.sessionId = this.session.id;
    this.session.onInitialized();
  }

  /** Why a request other than initialize is refused: the session is not initialized, or its protocol version is unknown. */
  private refuseAfterInitialize(req: IncomingMessage): string | undefined {
    if (this.session && !this.initialized) return "Bad Request: Server not initialized";
    const version = header(req, "mcp-protocol-version");
    if (version !== undefined && !SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
      return `Bad Request: Unsupported protocol version: ${version} (supported versions: ${SUPPORTED_PROTOCOL_VERSIONS.join(", ")})`;
    }
    return undefined;
  }

  private open(streamId: StreamId, res: ServerResponse): SseResponse {
    const headers = this.sessionId ? { ...SSE_HEADERS, "mcp-session-id": this.sessionId } : SSE_HEADERS;
    const stream = new SseResponse(res, headers, () => {
      if (this.streams.get(streamId) === stream) this.streams.delete(streamId);
    });
    this.streams.set(streamId, stream);
    return stream;
  }
}

/**
 * The requests of one POST: `stream` sends what relates to them as SSE events as it comes and ends with
 * the last answer; `collect` keeps the answers for one JSON body (or, for `restore`, for no one).
 */
type Exchange =
  | { kind: "stream"; streamId: StreamId; unanswered: Set<RequestId> }
  | { kind: "collect"; ids: RequestId[]; answers: Map<RequestId, JSONRPCMessage>; deliver: (answers: JSONRPCMessage[]) => void };

/** A response (result or error) rather than a request or notification. */
function isAnswer(message: JSONRPCMessage): boolean {
  return !("method" in message) && ("result" in message || "error" in message);
}

/** A header node:http gives as a string (repeated ones joined by ", ", as web Headers do). */
function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(", ") : value;
}
