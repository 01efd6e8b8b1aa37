import { subscribe, unsubscribe } from "node:diagnostics_channel";
import type { Tracer } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { detectResources, envDetector, resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor, type SpanProcessor } from "@opentelemetry/sdk-trace-base";
import { recordEgressSpan } from "./egress-spans.js";
import { events, flushTelemetry, type EgressRecord, type RequestRecord } from "./events.js";
import { RecentTraces, type TraceView } from "./recent-traces.js";
import { recordRequestSpans, RequestSpanIds, type ClaimedIds } from "./request-spans.js";
import { parentContext } from "./trace-context.js";

// The views of the traces this subscriber keeps: what `traces()` and `recent` return.
export type { SpanView, TraceView } from "./recent-traces.js";

/**
 * Request traces, built from the request records the router publishes (src/telemetry/events.ts).
 *
 * One trace per client request, whose request span is a child of the client's W3C `traceparent` if it
 * sent one. Its ids are the router's choice, made when the request arrived (`record.traceparent`, which
 * it also puts in the `_meta` of the request forwarded into the guest: see trace-context.ts); the spans are made from
 * the record once the request has ended (off the answer's path: see `publishSoon`), by
 * `recordRequestSpans` (src/telemetry/request-spans.ts, which describes them).
 *
 * Spans go to an in-memory ring of the last `maxTraces` traces (read by `GET /api/traces` and the status
 * page) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, to an OTLP/HTTP
 * collector. The provider is this object's own, never registered globally, so several gateways can run
 * in one process. The channels are process-wide, though: a request is traced by the first `Tracing`
 * that sees it (the record's `span` slot is claimed), so with several gateways in one process the
 * oldest one records them all.
 */

export interface TracingOptions {
  /** Traces kept in memory. Default 200. */
  maxTraces?: number;
  /** Defaults to the process environment; OTLP export is on when an OTLP endpoint is set in it. */
  env?: NodeJS.ProcessEnv;
  /** Extra span processors (tests). */
  spanProcessors?: SpanProcessor[];
}


/** The tracing subscriber; see the comment at the top of this file. */
export class Tracing {
  readonly recent: RecentTraces;
  /** True when spans are also exported over OTLP. */
  readonly exporting: boolean;
  private readonly provider: BasicTracerProvider;
  private readonly tracer: Tracer;
  private readonly ids = new RequestSpanIds();
  private readonly onStart = (message: unknown) => this.start(message as RequestRecord);
  private readonly onEnd = (message: unknown) => this.end(message as RequestRecord);
  private readonly onEgress = (message: unknown) => this.egress(message as EgressRecord);
  private closed = false;

  constructor(options: TracingOptions = {}) {
    const env = options.env ?? process.env;
    this.recent = new RecentTraces(options.maxTraces ?? 200);
    const processors: SpanProcessor[] = [this.recent, ...(options.spanProcessors ?? [])];
    this.exporting = Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) && env.OTEL_TRACES_EXPORTER !== "none";
    // With no url, the exporter reads the OTEL_EXPORTER_OTLP_* variables itself (endpoint, headers, timeout).
    if (this.exporting) processors.push(new BatchSpanProcessor(new OTLPTraceExporter()));
    const resource = resourceFromAttributes({ "service.name": "mcpvisor" }).merge(detectResources({ detectors: [envDetector] }));
    this.provider = new BasicTracerProvider({ resource, spanProcessors: processors, idGenerator: this.ids });
    this.tracer = this.provider.getTracer("mcpvisor");
    subscribe(events.requestStart.name, this.onStart);
    subscribe(events.requestEnd.name, this.onEnd);
    subscribe(events.egress.name, this.onEgress);
  }

  /** The recent traces, newest first; see `RecentTraces.list`. */
  traces(limit?: number, methods?: ReadonlySet<string>, tenant?: string): TraceView[] {
    return this.recent.list(limit, methods, tenant);
  }

  /**
   * A request arrived: it is claimed with the ids the router chose for it; the span is made at its end.
   * The record's `span` slot says which Tracing claimed it.
   */
  private start(record: RequestRecord): void {
    const [, traceId, spanId] = record.traceparent?.split("-") ?? [];
    if (this.closed || record.span !== undefined || !traceId || !spanId) return;
    record.span = { by: this, parent: parentContext(record.incomingTraceparent), traceId, spanId } satisfies ClaimedIds;
  }

  private end(record: RequestRecord): void {
    const claimed = record.span as ClaimedIds | undefined;
    if (claimed?.by !== this) return;
    record.span = undefined;
    recordRequestSpans(this.tracer, this.ids, claimed, record);
  }

  /** Like a request, an egress record is recorded by the first Tracing that sees it. */
  private egress(record: EgressRecord): void {
    if (this.closed || record.claimed !== undefined) return;
    record.claimed = this;
    recordEgressSpan(this.tracer, record);
  }

  /** Exports what is buffered (OTLP). */
  async flush(): Promise<void> {
    flushTelemetry();
    await this.provider.forceFlush();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    unsubscribe(events.requestStart.name, this.onStart);
    unsubscribe(events.requestEnd.name, this.onEnd);
    unsubscribe(events.egress.name, this.onEgress);
    await this.provider.shutdown().catch(() => undefined);
  }
}
