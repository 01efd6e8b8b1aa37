import { randomUUID } from "node:crypto";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { WebSocket, type RawData } from "ws";
import { errorReply, parseJsonRpc } from "./json-rpc.js";
import { errorResponse, isRefusal, toWire, type JsonRpcErrorResponse } from "./to-wire.js";

/** How long a closing socket may take to answer our close frame before it is cut. */
const CLOSE_GRACE_MS = 2_000;

export interface WebSocketTransportOptions {
  maxJsonDepth: number;
  /** Charges one message to its tenant's request rate; throws QuotaError when it is spent. */
  charge: () => void | Promise<void>;
}

/**
 * An MCP transport over one accepted WebSocket (the SDK has a client side only): one JSON-RPC message
 * per frame. A frame that is not a message gets a JSON-RPC error reply and the socket stays open; a
 * frame over the server's `maxPayload` is refused by `ws` itself (close code 1009).
 */
export class WebSocketServerTransport implements Transport {
  readonly sessionId = randomUUID();
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage) => void;
  private ended = false;

  constructor(
    private readonly socket: WebSocket,
    private readonly options: WebSocketTransportOptions,
  ) {
    // No frame may be read before the router has installed its callbacks (start()).
    socket.pause();
    socket.on("message", (data) => this.receive(data));
    socket.on("close", () => this.end());
    socket.on("error", (error) => this.onerror?.(error));
  }

  async start(): Promise<void> {
    if (this.socket.readyState !== WebSocket.OPEN) return this.end();
    this.socket.resume();
  }

  send(message: JSONRPCMessage): Promise<void> {
    return this.write(JSON.stringify(message));
  }

  /** Closes the socket (`reason`: at most 123 bytes of UTF-8), cutting it if the peer does not answer. */
  async close(code = 1000, reason = "MCP session ended"): Promise<void> {
    if (this.socket.readyState === WebSocket.CLOSED) return this.end();
    const closed = new Promise((resolve) => this.socket.once("close", resolve));
    this.socket.resume(); // if never started: a paused socket would not read the peer's close frame
    if (this.socket.readyState === WebSocket.OPEN) this.socket.close(code, reason);
    const cut = setTimeout(() => this.socket.terminate(), CLOSE_GRACE_MS);
    await closed;
    clearTimeout(cut);
  }

  private receive(data: RawData): void {
    // A Buffer (binaryType "nodebuffer") of UTF-8 JSON, text and binary frames alike: some clients send binary.
    const parsed = parseJsonRpc(data.toString(), this.options.maxJsonDepth);
    // In order: a charge counted across a cluster is asynchronous, and a message must not overtake another.
    this.inbound = this.inbound.then(async () => {
      if (!parsed.ok) return this.reply(errorReply(parsed));
      try {
        await this.options.charge();
      } catch (error) {
        if (!isRefusal(error)) throw error;
        // Over the rate, a request is refused with when to retry; a notification or reply is dropped.
        const { message } = parsed;
        if (!("method" in message) || !("id" in message)) return;
        return this.reply(errorResponse(message.id, toWire(error).error));
      }
      this.onmessage?.(parsed.message);
    }).catch((error: Error) => this.onerror?.(error));
  }

  private inbound: Promise<void> = Promise.resolve();

  private reply(message: JsonRpcErrorResponse): void {
    this.write(JSON.stringify(message)).catch((error: Error) => this.onerror?.(error));
  }

  private write(text: string): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.socket.readyState !== WebSocket.OPEN) return reject(new Error("WebSocket is not open"));
      this.socket.send(text, (error) => (error ? reject(error) : resolve()));
    });
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.onclose?.();
  }
}
