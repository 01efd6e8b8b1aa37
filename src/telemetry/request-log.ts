import { subscribe, unsubscribe } from "node:diagnostics_channel";
import type { Logger } from "pino";
import { events, type RequestRecord } from "./events.js";
import { summarize } from "./request-summary.js";

/**
 * The fields of one request's log line: its summary, with the request id, under the names the other
 * log lines use (`session`, `sandboxSource`). Arguments and results are never logged: they may hold secrets.
 */
export function requestLogFields(record: RequestRecord): Record<string, unknown> {
  const { sessionId, acquireSource, ...summary } = summarize(record);
  return {
    ...summary,
    requestId: record.requestId,
    ...(sessionId !== undefined ? { session: sessionId } : {}),
    ...(acquireSource !== undefined ? { sandboxSource: acquireSource } : {}),
  };
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
