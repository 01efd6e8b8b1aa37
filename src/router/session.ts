import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import {
  ErrorCode,
  LATEST_PROTOCOL_VERSION,
  SUPPORTED_PROTOCOL_VERSIONS,
  type JSONRPCMessage,
  type RequestId,
} from "@modelcontextprotocol/sdk/types.js";
import type { Logger } from "pino";
import type { JsonRpcMessage } from "../../sandbox/agent/protocol.js";
import { SandboxError } from "../sandbox/errors.js";
import type { SandboxPool } from "../sandbox/pool.js";
import { events, nowMs, publishSoon, type Outcome, type RequestRecord } from "../telemetry/events.js";
import type { Sandbox } from "../sandbox/sandbox.js";
import type { ServerLink } from "./server-link.js";
import type { SessionStore, StoredSession } from "./session-store.js";
import { toWire } from "../gateway/to-wire.js";
import type { Principal } from "../auth/principal.js";
import type { SandboxQuota } from "../tenancy/sandbox-quota.js";

/** Whose session it is: the principal it was opened by, and its tenant's hold on sandboxes. */
export interface SessionOwner {
  principal: Principal;
  sandboxes: SandboxQuota;
}

/**
 * What every client session shares, whatever it is routed to: the transport, the order messages are
 * handled in, the client's requests in flight (so none is left unanswered), and replies.
 */
export abstract class Session {
  /** Client requests in flight, in arrival order, with their progress tokens and telemetry records. */
  protected readonly inFlight = new Map<RequestId, { progressToken: string | number | undefined; record: RequestRecord }>();
  private readonly closedListeners = new Set<() => void>();
  private queue: Promise<void> = Promise.resolve();
  /** What the client declared at initialize; the server in the clone was told it may use everything. */
  private clientCapabilities: Record<string, unknown> = {};
  private protocolVersion = LATEST_PROTOCOL_VERSION;
  private closed = false;
  private persistence: { store: SessionStore; route: string } | undefined;
  private persisting: Promise<void> = Promise.resolve();

  constructor(
    protected readonly transport: Transport,
    protected readonly pool: SandboxPool,
    protected readonly log: Logger,
    protected readonly transportKind: string,
    protected readonly owner: SessionOwner,
  ) {
    // One message at a time: a request must not overtake one sent before it (e.g. its own cancellation).
    transport.onmessage = (message, extra) => {
      const headers = extra?.requestInfo?.headers as Record<string, string | string[] | undefined> | undefined;
      const traceparent = typeof headers?.traceparent === "string" ? headers.traceparent : undefined;
      this.queue = this.queue.then(() => this.receive(message as JsonRpcMessage, traceparent)).catch((err: Error) => {
        this.log.error({ err }, "error while handling a client message");
      });
    };
    transport.onclose = () => void this.close();
    transport.onerror = (error) => this.log.debug({ err: error.message }, "client transport error");
  }

  /** The id its client names it by (Mcp-Session-Id), for sessions that have one. */
  get id(): string | undefined {
    return this.transport.sessionId;
  }

  onClosed(listener: () => void): void {
    if (this.closed) listener();
    else this.closedListeners.add(listener);
  }

  /** Routes one client message; initialize, ping and bookkeeping are handled before. */
  protected abstract dispatch(
    message: JsonRpcMessage,
    method: string | undefined,
    id: RequestId | undefined,
    record: RequestRecord | undefined,
  ): Promise<void>;
  protected abstract initializeResult(): Promise<Record<string, unknown>>;
  protected abstract links(): ServerLink[];
  /** Which server a failure is reported for. */
  protected abstract serverFor(id: RequestId): string;

  private async receive(message: JsonRpcMessage, headerTraceparent: string | undefined): Promise<void> {
    const method = typeof message.method === "string" ? message.method : undefined;
    const id = message.id as RequestId | undefined;
    let record: RequestRecord | undefined;
    if (method !== undefined && id !== undefined) {
      const meta = (message.params as { _meta?: { progressToken?: string | number; traceparent?: unknown } } | undefined)?._meta;
      const incoming = headerTraceparent ?? (typeof meta?.traceparent === "string" ? meta.traceparent : undefined);
      record = {
        transport: this.transportKind,
        tenant: this.owner.principal.tenant,
        subject: this.owner.principal.subject,
        sessionId: this.transport.sessionId,
        requestId: id,
        method,
        startedAt: nowMs(),
        ...(incoming ? { incomingTraceparent: incoming } : {}),
      };
      this.inFlight.set(id, { progressToken: meta?.progressToken, record });
      events.requestStart.publish(record);
    }
    if (method === "initialize" && id !== undefined) return this.answerInitialize(id, message);
    if (method === "ping" && id !== undefined) return this.replyResult(id, {});
    if (method === "notifications/initialized") return;
    try {
      await this.dispatch(message, method, id, record);
    } catch (error) {
      if (id !== undefined && method !== undefined) this.fail(id, error, this.serverFor(id));
    }
  }

  private async answerInitialize(id: RequestId, message: JsonRpcMessage): Promise<void> {
    try {
      const params = (message.params ?? {}) as { protocolVersion?: string; capabilities?: Record<string, unknown> };
      this.clientCapabilities = params.capabilities ?? {};
      const requested = params.protocolVersion;
      const protocolVersion =
        requested && SUPPORTED_PROTOCOL_VERSIONS.includes(requested) ? requested : LATEST_PROTOCOL_VERSION;
      this.protocolVersion = protocolVersion;
      this.replyResult(id, { ...(await this.initializeResult()), protocolVersion });
    } catch (error) {
      this.fail(id, error, this.serverFor(id));
    }
  }

  /**
   * The template's server was initialized with roots, sampling and elicitation, so it may ask a client
   * that declared none of them; such a request is answered here (-32601) instead of waiting forever.
   */
  protected refusedByClient(message: JsonRpcMessage): JsonRpcMessage | undefined {
    const needs: Record<string, string> = { "sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots" };
    const capability = typeof message.method === "string" ? needs[message.method] : undefined;
    if (!capability || message.id === undefined || this.clientCapabilities[capability]) return undefined;
    return {
      jsonrpc: "2.0",
      id: message.id,
      error: { code: ErrorCode.MethodNotFound, message: `The client did not declare the '${capability}' capability` },
    };
  }

  /**
   * Delivers a server message; a response ends its request's bookkeeping, after it is on its way to
   * the client (telemetry is not on the answer's path).
   */
  protected async deliver(message: JsonRpcMessage, guestMs?: number): Promise<void> {
    const id = message.id as RequestId | undefined;
    if (id === undefined || "method" in message) return this.reply(message, this.relatedRequest(message));
    const guest = this.inFlight.get(id)?.record.guest;
    if (guest) {
      guest.answered = nowMs();
      if (guestMs !== undefined) guest.guestMs = guestMs;
    }
    const sent = this.reply(message, id);
    const error = message.error as { code?: number } | undefined;
    const isToolError = (message.result as { isError?: unknown } | undefined)?.isError === true;
    this.finish(id, error ? (error.code === ErrorCode.RequestTimeout ? "timeout" : "error") : isToolError ? "tool_error" : "ok", error ? `rpc_${error.code}` : undefined);
    await sent;
  }

  /**
   * Streamable HTTP delivers a server message on the stream of the request it belongs to. Progress is
   * matched by its token; other notifications and server->client requests go with the newest request
   * in flight (the usual case: a tool asking for sampling while it runs).
   */
  private relatedRequest(message: JsonRpcMessage): RequestId | undefined {
    const params = message.params as { progressToken?: string | number } | undefined;
    if (message.method === "notifications/progress" && params?.progressToken !== undefined) {
      for (const [id, { progressToken }] of this.inFlight) if (progressToken === params.progressToken) return id;
    }
    let newest: RequestId | undefined;
    for (const id of this.inFlight.keys()) newest = id;
    return newest;
  }

  /** Answers a request with an error, once: a request no longer in flight was already answered. */
  protected fail(id: RequestId, error: unknown, server: string): void {
    const wire = toWire(error, server).error;
    const errorType = error instanceof SandboxError ? error.code : error instanceof Error ? error.name : "unknown";
    if (!this.finish(id, wire.code === ErrorCode.RequestTimeout ? "timeout" : "error", errorType)) return;
    void this.reply({ jsonrpc: "2.0", id, error: wire });
  }

  protected replyError(id: RequestId, code: number, message: string, data?: Record<string, unknown>): void {
    void this.reply({ jsonrpc: "2.0", id, error: { code, message, ...(data ? { data } : {}) } });
    this.finish(id, "error", `rpc_${code}`);
  }

  protected replyResult(id: RequestId, result: Record<string, unknown>): void {
    void this.reply({ jsonrpc: "2.0", id, result });
    this.finish(id, "ok");
  }

  /** Ends a request's bookkeeping; false when it was already answered. */
  private finish(id: RequestId, outcome: Outcome, errorType?: string): boolean {
    const entry = this.inFlight.get(id);
    if (!entry) return false;
    this.inFlight.delete(id);
    const { record } = entry;
    record.endedAt = nowMs();
    record.outcome = outcome;
    if (record.guest && record.guest.answered === undefined) record.guest.answered = record.endedAt;
    if (errorType) record.errorType = errorType;
    publishSoon(events.requestEnd, record);
    return true;
  }

  private async reply(message: JsonRpcMessage, relatedRequestId?: RequestId): Promise<void> {
    try {
      await this.transport.send(message as JSONRPCMessage, relatedRequestId !== undefined ? { relatedRequestId } : undefined);
    } catch (error) {
      this.log.debug({ err: (error as Error).message }, "could not deliver a message to the client");
    }
  }

  /** Lets this session be saved while its sandboxes are suspended, to outlive a gateway restart. */
  enablePersistence(store: SessionStore, route: string): void {
    this.persistence = { store, route };
  }

  /**
   * Checks a tools/call before any VM is involved. Answers it (and returns false) when the tool does not
   * exist or its arguments fail the tool's inputSchema; `shown` is the name as the client wrote it.
   */
  protected async toolCallAcceptable(
    id: RequestId,
    link: ServerLink,
    tool: string,
    shown: string,
    args: unknown,
    record: RequestRecord | undefined,
  ): Promise<boolean> {
    const verdict = await link.checkToolCall(tool, args);
    if (verdict.ok) {
      if (record && !verdict.unlisted) record.tool = tool; // only listed tools become metric labels
      return true;
    }
    if (verdict.reason === "unknown-tool") {
      this.replyError(id, ErrorCode.InvalidParams, `Unknown tool '${shown}' on server '${link.server}'; tools/list shows the tools there are`);
    } else {
      if (record) Object.assign(record, { server: link.server, tool });
      this.replyError(id, ErrorCode.InvalidParams, `Invalid arguments for tool '${shown}': ${verdict.message}`, { tool: shown });
    }
    return false;
  }

  /** Brings back a sandbox this session had before a gateway restart. */
  protected abstract linkFor(server: string): ServerLink | undefined;

  adopt(server: string, sandbox: Sandbox): boolean {
    const link = this.linkFor(server);
    if (!link) return false;
    link.adopt(sandbox);
    return true;
  }

  /**
   * The session as it must be saved: the sandboxes that are on disk now. Only a session whose every
   * sandbox is on disk can be revived after a restart: while one runs, what is on disk is older than
   * what the session holds, so the record goes (a crash then means 404 and a new session, never the
   * older state answered as if current). Saves run one at a time.
   */
  protected persistSoon(): void {
    const persistence = this.persistence;
    const id = this.transport.sessionId;
    if (!persistence || !id || this.closed) return;
    this.persisting = this.persisting
      .then(async () => {
        const sandboxes: StoredSession["sandboxes"] = {};
        for (const link of this.links()) {
          const saved = link.suspendedSandbox;
          if (saved) sandboxes[link.server] = { ...saved, templateKey: (await this.pool.template(link.server)).key };
        }
        if (this.links().some((link) => link.live) || Object.keys(sandboxes).length === 0) return await persistence.store.delete(id);
        await persistence.store.save({
          id,
          tenant: this.owner.principal.tenant,
          route: persistence.route,
          transport: this.transportKind,
          protocolVersion: this.protocolVersion,
          clientCapabilities: this.clientCapabilities,
          sandboxes,
          savedAt: new Date().toISOString(),
        });
      })
      .catch((err: Error) => this.log.warn({ err: err.message }, "could not save the session"));
  }

  /**
   * Before a shutdown: a session its client can come back to has its idle sandboxes saved to disk, so
   * a restart loses nothing of it. Sessions that cannot be saved are left as they are.
   */
  async suspendForShutdown(): Promise<void> {
    if (!this.persistence || !this.transport.sessionId || this.closed) return;
    await Promise.allSettled(this.links().map((link) => link.suspendIfIdle()));
    await this.persisting;
  }

  /** The client ended the session (DELETE): everything it had goes, on disk too. */
  async end(): Promise<void> {
    await this.close(false);
  }

  /**
   * Ends the session's life in this process; requests still in flight are answered. With `keepSaved`
   * (the default for sessions that can be saved: a dropped connection, an idle session, a shutdown) what
   * is suspended stays on disk for the client to come back to. Idempotent.
   */
  async close(keepSaved = this.persistence !== undefined && this.transport.sessionId !== undefined): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const id of [...this.inFlight.keys()]) {
      this.finish(id, "error", "SESSION_CLOSED");
      void this.reply({ jsonrpc: "2.0", id, error: { code: ErrorCode.ConnectionClosed, message: "session closed" } });
    }
    await this.persisting;
    const keep = keepSaved && this.links().some((link) => link.suspendedSandbox);
    await Promise.allSettled(this.links().map((link) => link.close(keep)));
    if (!keep && this.persistence && this.transport.sessionId) await this.persistence.store.delete(this.transport.sessionId);
    await this.transport.close().catch(() => undefined);
    for (const listener of this.closedListeners) listener();
  }
}
