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
import type { SandboxPool } from "../sandbox/pool.js";
import type { ServerLink } from "./server-link.js";
import { toJsonRpcError } from "./to-wire.js";

/**
 * What every client session shares, whatever it is routed to: the transport, the order messages are
 * handled in, the client's requests in flight (so none is left unanswered), and replies.
 */
export abstract class Session {
  /** Client requests in flight, in arrival order, with their progress tokens. */
  protected readonly inFlight = new Map<RequestId, string | number | undefined>();
  private readonly closedListeners = new Set<() => void>();
  private queue: Promise<void> = Promise.resolve();
  /** What the client declared at initialize; the server in the clone was told it may use everything. */
  private clientCapabilities: Record<string, unknown> = {};
  private closed = false;

  constructor(
    protected readonly transport: Transport,
    protected readonly pool: SandboxPool,
    protected readonly log: Logger,
  ) {
    // One message at a time: a request must not overtake one sent before it (e.g. its own cancellation).
    transport.onmessage = (message) => {
      this.queue = this.queue.then(() => this.receive(message as JsonRpcMessage)).catch((err: Error) => {
        this.log.error({ err }, "error while handling a client message");
      });
    };
    transport.onclose = () => void this.close();
    transport.onerror = (error) => this.log.debug({ err: error.message }, "client transport error");
  }

  onClosed(listener: () => void): void {
    if (this.closed) listener();
    else this.closedListeners.add(listener);
  }

  /** Routes one client message; initialize, ping and bookkeeping are handled before. */
  protected abstract dispatch(message: JsonRpcMessage, method: string | undefined, id: RequestId | undefined): Promise<void>;
  protected abstract initializeResult(): Promise<Record<string, unknown>>;
  protected abstract links(): ServerLink[];
  /** Which server a failure is reported for. */
  protected abstract serverFor(id: RequestId): string;

  private async receive(message: JsonRpcMessage): Promise<void> {
    const method = typeof message.method === "string" ? message.method : undefined;
    const id = message.id as RequestId | undefined;
    if (method !== undefined && id !== undefined) {
      const meta = (message.params as { _meta?: { progressToken?: string | number } } | undefined)?._meta;
      this.inFlight.set(id, meta?.progressToken);
    }
    if (method === "initialize" && id !== undefined) return this.answerInitialize(id, message);
    if (method === "ping" && id !== undefined) return this.replyResult(id, {});
    if (method === "notifications/initialized") return;
    try {
      await this.dispatch(message, method, id);
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

  /** Delivers a server message; a response ends its request's bookkeeping. */
  protected async deliver(message: JsonRpcMessage): Promise<void> {
    const id = message.id as RequestId | undefined;
    const isResponse = id !== undefined && !("method" in message);
    if (isResponse) this.inFlight.delete(id);
    await this.reply(message, isResponse ? id : this.relatedRequest(message));
  }

  /**
   * Streamable HTTP delivers a server message on the stream of the request it belongs to. Progress is
   * matched by its token; other notifications and server->client requests go with the newest request
   * in flight (the usual case: a tool asking for sampling while it runs).
   */
  private relatedRequest(message: JsonRpcMessage): RequestId | undefined {
    const params = message.params as { progressToken?: string | number } | undefined;
    if (message.method === "notifications/progress" && params?.progressToken !== undefined) {
      for (const [id, token] of this.inFlight) if (token === params.progressToken) return id;
    }
    let newest: RequestId | undefined;
    for (const id of this.inFlight.keys()) newest = id;
    return newest;
  }

  /** Answers a request with an error, once: a request no longer in flight was already answered. */
  protected fail(id: RequestId, error: unknown, server: string): void {
    if (!this.inFlight.delete(id)) return;
    void this.reply({ jsonrpc: "2.0", id, error: toJsonRpcError(error, server) });
  }

  protected replyError(id: RequestId, code: number, message: string, data?: Record<string, unknown>): void {
    this.inFlight.delete(id);
    void this.reply({ jsonrpc: "2.0", id, error: { code, message, ...(data ? { data } : {}) } });
  }

  protected replyResult(id: RequestId, result: Record<string, unknown>): void {
    this.inFlight.delete(id);
    void this.reply({ jsonrpc: "2.0", id, result });
  }

  private async reply(message: JsonRpcMessage, relatedRequestId?: RequestId): Promise<void> {
    try {
      await this.transport.send(message as JSONRPCMessage, relatedRequestId !== undefined ? { relatedRequestId } : undefined);
    } catch (error) {
      this.log.debug({ err: (error as Error).message }, "could not deliver a message to the client");
    }
  }

  /** Ends the session and its sandboxes; requests still in flight are answered. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const id of this.inFlight.keys()) {
      void this.reply({ jsonrpc: "2.0", id, error: { code: ErrorCode.ConnectionClosed, message: "session closed" } });
    }
    this.inFlight.clear();
    await Promise.allSettled(this.links().map((link) => link.close()));
    await this.transport.close().catch(() => undefined);
    for (const listener of this.closedListeners) listener();
  }
}
