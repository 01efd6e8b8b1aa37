import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import { events, nowMs, publishSoon, type Outcome, type RequestRecord } from "../telemetry/events.js";
import type { JSONRPCMessage, JSONRPCResponse, RequestId } from "./messages.js";

interface Entry {
  progressToken: string | number | undefined;
  record: RequestRecord;
}

/**
 * A session's client requests in flight, in arrival order, each with its telemetry record: so none is
 * left unanswered, each is finished exactly once, and a server message finds the request it belongs to.
 */
export class RequestLedger {
  private readonly inFlight = new Map<RequestId, Entry>();

  open(id: RequestId, record: RequestRecord, progressToken: string | number | undefined): void {
    this.inFlight.set(id, { progressToken, record });
    events.requestStart.publish(record);
  }

  record(id: RequestId): RequestRecord | undefined {
    return this.inFlight.get(id)?.record;
  }

  ids(): RequestId[] {
    return [...this.inFlight.keys()];
  }

  /** Ends a request's bookkeeping; false when it was already answered. */
  finish(id: RequestId, outcome: Outcome, errorType?: string): boolean {
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

  /** Finishes a request with the server's response: its outcome is read off the response. */
  finishWith(response: JSONRPCResponse, guestMs: number | undefined): void {
    const id = response.id;
    if (id === undefined) return;
    const guest = this.inFlight.get(id)?.record.guest;
    if (guest) {
      guest.answered = nowMs();
      if (guestMs !== undefined) guest.guestMs = guestMs;
    }
    if ("error" in response) {
      this.finish(id, response.error.code === ErrorCode.RequestTimeout ? "timeout" : "error", `rpc_${response.error.code}`);
    } else {
      this.finish(id, response.result.isError === true ? "tool_error" : "ok");
    }
  }

  /**
   * Which request a server message belongs to (Streamable HTTP sends it on that request's stream).
   * Progress is matched by its token; other notifications and server->client requests go with the
   * newest request in flight (the usual case: a tool asking for sampling while it runs).
   */
  relatedRequest(message: JSONRPCMessage): RequestId | undefined {
    if ("method" in message && message.method === "notifications/progress") {
      const token = message.params?.progressToken;
      if (token !== undefined) for (const [id, { progressToken }] of this.inFlight) if (progressToken === token) return id;
    }
    let newest: RequestId | undefined;
    for (const id of this.inFlight.keys()) newest = id;
    return newest;
  }
}
