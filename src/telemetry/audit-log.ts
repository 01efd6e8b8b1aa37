import { subscribe, unsubscribe } from "node:diagnostics_channel";
import pino, { type Logger } from "pino";
import { events, type EgressRecord, type RequestRecord } from "./events.js";
import { traceIdOf } from "./request-summary.js";

const FLUSH_EVERY_MS = 1_000;

/** A request turned away at the edge: no credential, a bad one, a forbidden route, a tenant over its limit. */
export interface RefusedRequest {
  face: string;
  path: string;
  status: number;
  reason: string;
  tenant?: string;
  subject?: string;
  remoteAddress?: string;
  /** What a 2026-07-28 request was for, from its Mcp-Method and Mcp-Name headers (the body is never read to refuse). */
  method?: string;
  name?: string;
}

/**
 * The audit trail, on a stream of its own (a file, apart from the operational log): who called which
 * tool on which server, when, with what outcome and trace id; and every request refused at the edge.
 * Arguments, results and credentials are never written.
 */
export class AuditLog {
  private readonly log: Logger | undefined;
  private readonly flusher: NodeJS.Timeout | undefined;
  private readonly onRequestEnd = (message: unknown) => this.toolCall(message as RequestRecord);
  private readonly onEgress = (message: unknown) => this.egress(message as EgressRecord);

  /**
   * `destination`: a file path (appended to, created with its directory), or "off". Lines are written
   * in batches (4 KiB, or every second), not one write per call: a write per tool call was the largest
   * single cost on the request path. A hard kill can lose the last second of lines.
   */
  constructor(destination: string) {
    if (destination === "off") return;
    const stream = pino.destination({ dest: destination, mkdir: true, sync: false, minLength: 4096 });
    this.log = pino({ base: undefined, timestamp: pino.stdTimeFunctions.isoTime, messageKey: "event", formatters: { level: (label) => ({ level: label }) } }, stream);
    this.flusher = setInterval(() => this.log?.flush(), FLUSH_EVERY_MS);
    this.flusher.unref();
    subscribe(events.requestEnd.name, this.onRequestEnd);
    subscribe(events.egress.name, this.onEgress);
  }

  /**
   * Egress worth an audit line: a refusal, an upstream certificate that failed verification, and a
   * request the gateway added a credential header to (its name only, never the value).
   */
  private egress(record: EgressRecord): void {
    const injected = record.outcome === "ok" && record.injectedHeader !== undefined;
    if (record.outcome !== "refused" && record.outcome !== "tls_failed" && !injected) return;
    this.log?.info(
      {
        server: record.server,
        vm: record.vm,
        kind: record.kind,
        destination: record.destination,
        target: record.target,
        outcome: record.outcome,
        ...(record.reason ? { reason: record.reason } : {}),
        ...(record.injectedHeader ? { injectedHeader: record.injectedHeader } : {}),
        traceId: traceIdOf(record.traceparent),
      },
      injected ? "egress credential added" : record.outcome === "refused" ? "egress refused" : "egress upstream certificate failed",
    );
  }

  refused(request: RefusedRequest): void {
    this.log?.info(request, "refused");
  }

  private toolCall(record: RequestRecord): void {
    if (record.method !== "tools/call") return;
    this.log?.info(
      {
        tenant: record.tenant,
        subject: record.subject,
        server: record.server,
        tool: record.tool,
        face: record.transport,
        session: record.sessionId,
        outcome: record.outcome ?? "error",
        ...(record.errorType ? { errorType: record.errorType } : {}),
        ...(record.denied ? { denied: true } : {}),
        durationMs: Math.round(((record.endedAt ?? record.startedAt) - record.startedAt) * 1000) / 1000,
        traceId: traceIdOf(record.traceparent ?? record.incomingTraceparent),
      },
      "tools/call",
    );
  }

  /** Stops listening and writes out what is buffered. */
  close(): Promise<void> {
    unsubscribe(events.requestEnd.name, this.onRequestEnd);
    unsubscribe(events.egress.name, this.onEgress);
    clearInterval(this.flusher);
    const log = this.log;
    if (!log) return Promise.resolve();
    return new Promise((resolve) => log.flush(() => resolve()));
  }
}
