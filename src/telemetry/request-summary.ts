import type { Outcome, RequestRecord } from "./events.js";

/**
 * A finished request flattened for people: the request log's lines and the status page's recent calls.
 * Durations in milliseconds, rounded; phases the request did not go through are left out.
 */
export interface RequestSummary {
  transport: string;
  tenant: string;
  method: string;
  server?: string;
  tool?: string;
  sessionId?: string;
  outcome: Outcome;
  errorType?: string;
  durationMs: number;
  acquireMs?: number;
  /** Where its sandbox came from (`warm-pool`, `prestarted`, `cold-vmm`, ...). */
  acquireSource?: string;
  /** Sent to the guest until its answer came back (or until the request ended, without one). */
  roundtripMs?: number;
  /** Time inside the guest, measured by its agent. */
  guestMs?: number;
  /** The trace of the context passed into the guest: this gateway's request span when traced. */
  traceId?: string;
}

export function summarize(record: RequestRecord): RequestSummary {
  const end = record.endedAt ?? record.startedAt;
  const summary: RequestSummary = {
    transport: record.transport,
    tenant: record.tenant,
    method: record.method,
    // A request that ended with no outcome (its session or the gateway closed under it) did not succeed.
    outcome: record.outcome ?? "error",
    durationMs: round(end - record.startedAt),
  };
  if (record.server) summary.server = record.server;
  if (record.tool) summary.tool = record.tool;
  if (record.sessionId) summary.sessionId = record.sessionId;
  if (record.errorType) summary.errorType = record.errorType;
  if (record.acquire) {
    summary.acquireMs = round(record.acquire.end - record.acquire.start);
    summary.acquireSource = record.acquire.source;
  }
  if (record.guest) {
    summary.roundtripMs = round((record.guest.answered ?? end) - record.guest.sent);
    if (record.guest.guestMs !== undefined) summary.guestMs = round(record.guest.guestMs);
  }
  const traceId = traceIdOf(record.traceparent ?? record.incomingTraceparent);
  if (traceId) summary.traceId = traceId;
  return summary;
}

/** The 32-hex trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), if it is one. */
export function traceIdOf(traceparent: string | undefined): string | undefined {
  const match = traceparent ? /^[\da-f]{2}-([\da-f]{32})-[\da-f]{16}-[\da-f]{2}/i.exec(traceparent.trim()) : null;
  return match && !/^0+$/.test(match[1]!) ? match[1]!.toLowerCase() : undefined;
}

/** Milliseconds to the microsecond; a negative span (clocks read out of order) counts as none. */
export function round(ms: number): number {
  return Math.round(Math.max(0, ms) * 1000) / 1000;
}
