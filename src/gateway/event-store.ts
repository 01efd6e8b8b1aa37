import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";

/** One SSE stream of a session: a POST's answer stream (a random id) or the session's GET stream. */
export type StreamId = string;
export type EventId = string;

interface StoredEvent {
  id: EventId;
  streamId: StreamId;
  /** Undefined for a priming event: it only gives the client an id to resume from. */
  message: JSONRPCMessage | undefined;
}

/**
 * The recent events of one Streamable HTTP session, so a client whose SSE stream broke can reconnect
 * with `Last-Event-ID` and get what it missed. Bounded: a client gone for long loses the oldest events
 * rather than the gateway its memory. Synchronous on purpose: the transport stores an event and writes
 * it (or replays and registers a stream) in one turn, so a resume can never see an event twice or miss one.
 */
export class SessionEventStore {
  private readonly events: StoredEvent[] = [];
  private sequence = 0;

  constructor(private readonly maxEvents = 1000) {}

  add(streamId: StreamId, message: JSONRPCMessage | undefined): EventId {
    const id = `${streamId}:${++this.sequence}`;
    this.events.push({ id, streamId, message });
    if (this.events.length > this.maxEvents) this.events.splice(0, this.events.length - this.maxEvents);
    return id;
  }

  /** Forgets a stream's events: it was delivered whole, nobody will resume it. */
  dropStream(streamId: StreamId): void {
    let kept = 0;
    for (const event of this.events) if (event.streamId !== streamId) this.events[kept++] = event;
    this.events.length = kept;
  }

  /** The stream an event was sent on; undefined when the id is unknown or too old to replay. */
  streamOf(eventId: EventId): StreamId | undefined {
    return this.events.find((e) => e.id === eventId)?.streamId;
  }

  /** The messages sent on `eventId`'s stream after it, oldest first (priming events carry none). */
  after(eventId: EventId): Array<{ id: EventId; message: JSONRPCMessage }> {
    const at = this.events.findIndex((e) => e.id === eventId);
    if (at === -1) return [];
    const { streamId } = this.events[at]!;
    const later: Array<{ id: EventId; message: JSONRPCMessage }> = [];
    for (const event of this.events.slice(at + 1)) {
      if (event.streamId === streamId && event.message) later.push({ id: event.id, message: event.message });
    }
    return later;
  }
}
