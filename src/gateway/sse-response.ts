import type { OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import type { EventId } from "./event-store.js";

/** Proxies and idle timeouts drop a silent stream; a comment frame this often keeps it open. */
const KEEP_ALIVE_MS = 15_000;
/** How long a POST's SSE headers and priming event may wait to share a write with the answer (see SseResponse). */
const HOLD_MS = 20;

/**
 * One SSE response: a POST's answer stream, or a GET stream. A POST's stream holds its headers and
 * priming event back for up to HOLD_MS: a call answered by then, with nothing before, is answered with
 * one JSON body in one write. Anything else the server sends starts the stream at once, so progress is
 * never held up; a slow call's client sees its stream open (priming event first) after HOLD_MS.
 */
export class SseResponse {
  /** Makes the priming event (stores it, returns its id), until the stream needs it. */
  private priming: (() => EventId) | undefined;
  /** The priming event's frame, made and waiting to go out with the stream's first write. */
  private primed = "";
  /** The hold, then the keep-alive: a silent stream is dropped by proxies and idle timeouts. */
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly res: ServerResponse,
    private readonly headers: OutgoingHttpHeaders,
    gone: () => void,
  ) {
    res.once("close", () => {
      clearTimeout(this.timer);
      gone();
    });
  }

  /** Nothing has been sent yet: the stream is within its hold. */
  get held(): boolean {
    return !this.res.headersSent;
  }

  /** Holds the headers back for at most HOLD_MS; the priming event, if any, is made only if the stream starts. */
  hold(priming: (() => EventId) | undefined): void {
    this.priming = priming;
    this.timer = setTimeout(() => this.start(""), HOLD_MS).unref();
  }

  /**
   * Makes the priming event of a held stream about to carry events: called before those events are
   * stored, so that its id comes first and a resume from it replays them.
   */
  prime(): void {
    const priming = this.priming;
    this.priming = undefined;
    if (priming) this.primed = frame(undefined, priming());
  }

  write(message: JSONRPCMessage, eventId: EventId): void {
    if (this.res.headersSent) this.res.write(frame(message, eventId));
    else this.start(frame(message, eventId));
  }

  /** Sends the headers, the priming event and `text`; then keeps the stream alive. */
  start(text: string): void {
    clearTimeout(this.timer);
    this.prime();
    this.res.writeHead(200, this.headers);
    const first = this.primed + text;
    this.primed = "";
    if (first) this.res.write(first);
    else this.res.flushHeaders();
    this.timer = setInterval(() => this.res.write(": keepalive\n\n"), KEEP_ALIVE_MS).unref();
  }

  /**
   * An answer that came within the hold, before anything else, goes as one JSON body (the client accepts
   * both). There is nothing to resume, and clients take a JSON answer as final, whereas an SSE stream with
   * event ids that ends in an *error* makes the SDK's client (1.32) reconnect with Last-Event-ID to resume.
   */
  answerAsJson(message: JSONRPCMessage): void {
    clearTimeout(this.timer);
    this.priming = undefined;
    const body = JSON.stringify(message);
    this.res.writeHead(200, { ...jsonHeaders(this.headers), "content-length": Buffer.byteLength(body) }).end(body);
  }

  /** Ends the stream, with its last event in the same write; `delivered` once it is all written out. */
  end(message?: JSONRPCMessage, eventId?: EventId, delivered?: () => void): void {
    clearTimeout(this.timer);
    if (delivered) this.res.once("finish", delivered);
    this.prime();
    const last = this.primed + (message ? frame(message, eventId!) : "");
    this.primed = "";
    if (this.res.headersSent) this.res.end(last || undefined);
    else this.res.writeHead(200, { ...this.headers, "content-length": Buffer.byteLength(last) }).end(last);
  }
}

/** The headers of a JSON answer on a stream's response: the session's id, if any, stays. */
function jsonHeaders(sse: OutgoingHttpHeaders): OutgoingHttpHeaders {
  const session = sse["mcp-session-id"];
  return { "content-type": "application/json", ...(session ? { "mcp-session-id": session } : {}) };
}

/** One SSE event: a message with its event id, or (no message) a priming event that only gives an id to resume from. */
export function frame(message: JSONRPCMessage | undefined, eventId: EventId): string {
  return message ? `event: message\nid: ${eventId}\ndata: ${JSON.stringify(message)}\n\n` : `id: ${eventId}\ndata: \n\n`;
}
