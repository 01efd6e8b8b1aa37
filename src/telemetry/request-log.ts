import { subscribe, unsubscribe } from "node:diagnostics_channel";
import type { Logger } from "pino";
import { events, type RequestRecord } from "./events.js";

/** The 32-hex trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), if it is one. */
export function traceIdOf(traceparent: string | undefined): string | undefined {
  const match = traceparent ? /^[\da-f]{2}-([\da-f]{32})-[\da-f]{16}-[\da-f]{2}/i.exec(traceparent.trim()) : null;
  return match && !/^0+$/.test(match[1]!) ? match[1]!.toLowerCase() : undefined;
}

/** The fields of one request's log line. Arguments and results are never logged: they may hold secrets. */
export function requestLogFields(record: RequestRecord): Record<string, unknown> {
  const fields: Record<string, unknown> = {
    transport: record.transport,
    tenant: record.tenant,
    method: record.method,
    server: record.server,
    tool: record.tool,
    session: record.sessionId,
    requestId: record.requestId,
    outcome: record.outcome ?? "error",
    durationMs: round((record.endedAt ?? record.startedAt) - record.startedAt),
    traceId: traceIdOf(record.traceparent ?? record.incomingTraceparent),
  };
  if (record.errorType) fields.errorType = record.errorType;
  if (record.acquire) {
    fields.acquireMs = round(record.acquire.end - record.acquire.start);
    fields.sandboxSource = record.acquire.source;
  }
  if (record.guest?.guestMs !== undefined) fields.guestMs = round(record.guest.guestMs);
  for (const key of Object.keys(fields)) if (fields[key] === undefined) delete fields[key];
  return fields;
}

function round(ms: number): number {
  return Math.round(Math.max(0, ms) * 1000) / 1000;
}

/**
 * One log line per finished request: every tools/call (info; warn when it failed or timed out), and
 * other methods when they failed (warn) or at debug level. Returns the unsubscribe function.
 */
export function subscribeRequestLog(log: Logger): () => void {
  const requests = log.child({ component: "request" });
  const handler = (message: unknown) => {
    const record = message as RequestRecord;
    const failed = record.outcome === "error" || record.outcome === "timeout" || record.outcome === undefined;
    if (record.method === "tools/call") {
      if (failed) requests.warn(requestLogFields(record), "tool call failed");
      else requests.info(requestLogFields(record), "tool call");
    } else if (failed) {
      requests.warn(requestLogFields(record), "request failed");
    } else if (requests.isLevelEnabled("debug")) {
      requests.debug(requestLogFields(record), "request");
    }
  };
  subscribe(events.requestEnd.name, handler);
  return () => unsubscribe(events.requestEnd.name, handler);
}
