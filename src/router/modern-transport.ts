import type { Transport, TransportSendOptions } from "@modelcontextprotocol/sdk/shared/transport.js";
import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import { isRequest, isResponse, type JSONRPCMessage, type JSONRPCNotification, type JSONRPCRequest, type JSONRPCResponse, type RequestId } from "./messages.js";
import { CACHEABLE_METHODS, logLevelAtLeast, modernMetaOf, type ModernRequestMeta } from "./modern-protocol.js";

/** Where one modern request's answer goes: a face's HTTP response (or, later, a WebSocket or stdio line). */
export interface ModernReplyTarget {
  /** A message about the request before its answer (progress, a log line the client asked for). */
  notify(message: JSONRPCNotification): void;
  /** The answer, with the client's own id; nothing follows it. */
  answer(message: JSONRPCResponse): void;
}

export interface CacheHints {
  ttlMs: number;
  cacheScope: "public" | "private";
}

/** What 2025-era servers answer for a resource that does not exist (the 2026-07-28 revision says -32602). */
const LEGACY_RESOURCE_NOT_FOUND = -32002;

interface Exchange {
  clientId: RequestId;
  method: string;
  meta: ModernRequestMeta;
  target: ModernReplyTarget;
}

/**
 * The transport of one principal's modern-era session on a route (docs/design/protocol-eras.md). Each
 * request comes with a reply target of its own; it gets an id unique in the session, since stateless
 * clients number their requests independently (every one of them may send id 1), and its answer goes back
 * to its target under the client's id, with the 2026 result fields (`resultType`, cache hints) added.
 */
export class ModernTransport implements Transport {
  onmessage?: (message: JSONRPCMessage) => void;
  onclose?: () => void;
  onerror?: (error: Error) => void;
  private readonly exchanges = new Map<RequestId, Exchange>();
  private next = 0;
  private closed = false;

  constructor(
    /** The session's id: what its saved state is stored under (see ModernSessions). */
    readonly sessionId: string,
    private readonly cache: CacheHints,
  ) {}

  async start(): Promise<void> {}

  /** Hands one request to the session; the function returned abandons it (its client went away). */
  request(message: JSONRPCRequest, target: ModernReplyTarget): () => void {
    const id = `modern-${++this.next}`;
    this.exchanges.set(id, { clientId: message.id, method: message.method, meta: modernMetaOf(message), target });
    this.onmessage?.({ ...message, id });
    return () => {
      if (!this.exchanges.delete(id)) return;
      this.onmessage?.({ jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: id, reason: "The client closed its connection" } });
    };
  }

  /** What the client of request `id` (an id of this session's) declared. */
  metaOf(id: RequestId): ModernRequestMeta | undefined {
    return this.exchanges.get(id)?.meta;
  }

  async send(message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    if (isResponse(message)) {
      const exchange = message.id === undefined ? undefined : this.exchanges.get(message.id);
      if (!exchange) return; // abandoned by its client
      this.exchanges.delete(message.id!);
      return exchange.target.answer(this.answerOf(message, exchange));
    }
    const related = options?.relatedRequestId === undefined ? undefined : this.exchanges.get(options.relatedRequestId);
    // Messages about no request of a modern client (list changes) have no stream to go on yet.
    if (!related || isRequest(message)) return;
    if (message.method === "notifications/message") {
      if (related.meta.logLevel === undefined || !logLevelAtLeast(message.params?.level, related.meta.logLevel)) return;
    }
    related.target.notify(message);
  }

  private answerOf(message: JSONRPCResponse, exchange: Exchange): JSONRPCResponse {
    if (!("result" in message)) {
      // SEP-2164: a resource that does not exist is invalid params now; 2025-era servers say -32002.
      const error = message.error.code === LEGACY_RESOURCE_NOT_FOUND ? { ...message.error, code: ErrorCode.InvalidParams } : message.error;
      return { ...message, error, id: exchange.clientId };
    }
    const result: Record<string, unknown> = { resultType: "complete", ...message.result };
    if (CACHEABLE_METHODS.has(exchange.method)) {
      if (!Number.isSafeInteger(result.ttlMs) || (result.ttlMs as number) < 0) result.ttlMs = this.cache.ttlMs;
      if (result.cacheScope !== "public" && result.cacheScope !== "private") result.cacheScope = this.cache.cacheScope;
    }
    return { jsonrpc: "2.0", id: exchange.clientId, result } as JSONRPCResponse;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.exchanges.clear();
    this.onclose?.();
  }
}

