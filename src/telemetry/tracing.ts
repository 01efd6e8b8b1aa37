import { subscribe, unsubscribe } from "node:diagnostics_channel";
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  TraceFlags,
  type Attributes,
  type Context,
  type Span,
  type Tracer,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { detectResources, envDetector, resourceFromAttributes } from "@opentelemetry/resources";
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  RandomIdGenerator,
  type IdGenerator,
  type ReadableSpan,
  type SpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { events, flushTelemetry, type RequestRecord } from "./events.js";

/**
 * Request traces, built from the request records the router publishes (src/telemetry/events.ts).
 *
 * One trace per client request. The request span (kind SERVER, named per the OpenTelemetry MCP
 * conventions `{mcp.method.name} {target}`) is a child of the client's W3C `traceparent` if it sent one.
 * Its ids are chosen when the request arrives and go into `record.traceparent`, which the router puts
 * in the `_meta` of the request forwarded into the guest; the spans themselves are made from the record
 * once the request has ended (off the answer's path: see `publishSoon`), with the record's times. The
 * request's phases become child spans:
 *
 *   tools/call run                                  SERVER  the whole request, arrival to answer
 *   ├─ mcpvisor.router.route                        routing: arrival until a sandbox is asked for
 *   ├─ mcpvisor.sandbox.acquire                     pool take or resume: `mcpvisor.sandbox.source` (warm-pool,
 *   │                                               prestarted, cold-vmm) and `mcpvisor.sandbox.resumed`
 *   └─ mcpvisor.sandbox.guest_roundtrip             sent on the agent channel until the answer came back
 *      └─ mcpvisor.guest.server                     time inside the guest, measured by its agent
 *
 * The request span's attributes follow the MCP and gen_ai conventions: `mcp.method.name`,
 * `mcp.session.id`, `jsonrpc.request.id`, `network.transport` (`tcp`; `pipe` for stdio),
 * `network.protocol.name` (`http`, `websocket`), `gen_ai.tool.name` with `gen_ai.operation.name` =
 * `execute_tool` (tools/call), `gen_ai.prompt.name` (prompts/get); on failure status ERROR, `error.type`
 * (`tool_error` for a result with `isError`, a sandbox error code such as `CALL_TIMEOUT`, or `rpc_<code>`)
 * and `rpc.response.status_code`. Ours: `mcpvisor.server`, `mcpvisor.transport`, `mcpvisor.outcome`.
 *
 * The guest reports a duration, not timestamps (its clock is not the host's), so the guest span is
 * placed in the middle of the round trip: it starts at `sent + (roundtrip - guestMs) / 2`, i.e. the
 * channel's latency is assumed equal both ways. Its attribute `mcpvisor.guest.placement` says so.
 *
 * Spans go to an in-memory ring of the last `maxTraces` traces (read by `GET /api/traces` and the status
 * page) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, to an OTLP/HTTP
 * collector. The provider is this object's own, never registered globally, so several gateways can run
 * in one process. The channels are process-wide, though: a request is traced by the first `Tracing`
 * that sees it (the record's `span` slot is claimed), so with several gateways in one process the
 * oldest one records them all.
 */

export interface SpanView {
  name: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  kind: string;
  /** Epoch milliseconds. */
  startMs: number;
  endMs: number;
  durationMs: number;
  status: { code: "unset" | "ok" | "error"; message?: string };
  attributes: Attributes;
}

export interface TraceView {
  traceId: string;
  /** The earliest span of the trace that has no parent in it (the request span, usually). */
  rootName: string;
  startMs: number;
  endMs: number;
  durationMs: number;
  error: boolean;
  /** In tree order: each parent before its children, siblings by start time. */
  spans: SpanView[];
}

export interface TracingOptions {
  /** Traces kept in memory. Default 200. */
  maxTraces?: number;
  /** Defaults to the process environment; OTLP export is on when an OTLP endpoint is set in it. */
  env?: NodeJS.ProcessEnv;
  /** Extra span processors (tests). */
  spanProcessors?: SpanProcessor[];
}

const MAX_SPANS_PER_TRACE = 500;

function ofTenant(spans: SpanView[], tenant: string | undefined): SpanView[] {
  return tenant === undefined ? spans : spans.filter((s) => s.attributes["mcpvisor.tenant"] === tenant);
}
const propagator = new W3CTraceContextPropagator();

/** Keeps the spans of the last N traces, grouped by trace id; the newest trace is last. */
export class RecentTraces implements SpanProcessor {
  private readonly traces = new Map<string, SpanView[]>();

  constructor(private readonly maxTraces: number) {}

  onStart(): void {}

  onEnd(span: ReadableSpan): void {
    const view = toView(span);
    let spans = this.traces.get(view.traceId);
    if (spans) this.traces.delete(view.traceId); // re-inserted below: it is the newest again
    else spans = [];
    if (spans.length < MAX_SPANS_PER_TRACE) spans.push(view);
    this.traces.set(view.traceId, spans);
    while (this.traces.size > this.maxTraces) this.traces.delete(this.traces.keys().next().value!);
  }

  /**
   * Newest first; with `methods`, only traces with a request span of one of these MCP methods; with
   * `tenant`, only that tenant's spans (a trace id can be shared by two tenants' requests: each sees its own).
   */
  list(limit = this.maxTraces, methods?: ReadonlySet<string>, tenant?: string): TraceView[] {
    flushTelemetry();
    const out: TraceView[] = [];
    for (const [traceId, all] of [...this.traces].reverse()) {
      if (out.length >= limit) break;
      const spans = ofTenant(all, tenant);
      if (!spans.length) continue;
      if (methods && !spans.some((s) => methods.has(String(s.attributes["mcp.method.name"])))) continue;
      out.push(traceView(traceId, spans));
    }
    return out;
  }

  get(traceId: string, tenant?: string): TraceView | undefined {
    flushTelemetry();
    const spans = ofTenant(this.traces.get(traceId) ?? [], tenant);
    return spans.length ? traceView(traceId, spans) : undefined;
  }

  clear(): void {
    this.traces.clear();
  }

  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

/** Spans in tree order (each parent before its children, siblings by start time), as a waterfall shows them. */
function treeOrder(spans: SpanView[]): SpanView[] {
  const byStart = [...spans].sort((a, b) => a.startMs - b.startMs || b.endMs - a.endMs);
  const ids = new Set(spans.map((s) => s.spanId));
  const children = new Map<string, SpanView[]>();
  const roots: SpanView[] = [];
  for (const s of byStart) {
    if (s.parentSpanId && ids.has(s.parentSpanId)) {
      const list = children.get(s.parentSpanId) ?? [];
      list.push(s);
      children.set(s.parentSpanId, list);
    } else roots.push(s);
  }
  const out: SpanView[] = [];
  const visit = (s: SpanView) => {
    out.push(s);
    for (const c of children.get(s.spanId) ?? []) visit(c);
  };
  roots.forEach(visit);
  return out;
}

function traceView(traceId: string, spans: SpanView[]): TraceView {
  const sorted = treeOrder(spans);
  const root = sorted[0]!;
  const startMs = Math.min(...sorted.map((s) => s.startMs));
  const endMs = Math.max(...sorted.map((s) => s.endMs));
  return {
    traceId,
    rootName: root.name,
    startMs,
    endMs,
    durationMs: endMs - startMs,
    error: sorted.some((s) => s.status.code === "error"),
    spans: sorted,
  };
}

function hrToMs([seconds, nanos]: [number, number]): number {
  return seconds * 1000 + nanos / 1e6;
}

function toView(span: ReadableSpan): SpanView {
  const context = span.spanContext();
  const startMs = hrToMs(span.startTime);
  const endMs = hrToMs(span.endTime);
  const status = span.status.code === SpanStatusCode.ERROR ? "error" : span.status.code === SpanStatusCode.OK ? "ok" : "unset";
  return {
    name: span.name,
    traceId: context.traceId,
    spanId: context.spanId,
    ...(span.parentSpanContext ? { parentSpanId: span.parentSpanContext.spanId } : {}),
    kind: SpanKind[span.kind]!.toLowerCase(),
    startMs,
    endMs,
    durationMs: endMs - startMs,
    status: { code: status, ...(span.status.message ? { message: span.status.message } : {}) },
    attributes: { ...span.attributes },
  };
}

/** `network.transport` and `network.protocol.name` per transport kind the router reports. */
const TRANSPORTS: Record<string, { transport: string; protocol?: string }> = {
  "streamable-http": { transport: "tcp", protocol: "http" },
  sse: { transport: "tcp", protocol: "http" },
  websocket: { transport: "tcp", protocol: "websocket" },
  stdio: { transport: "pipe" },
};

/** The span name per the MCP conventions: `{mcp.method.name} {target}`, target a tool or prompt name. */
export function requestSpanName(record: RequestRecord): string {
  return record.tool && (record.method === "tools/call" || record.method === "prompts/get")
    ? `${record.method} ${record.tool}`
    : record.method;
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
  }

  /** The recent traces, newest first; see `RecentTraces.list`. */
  traces(limit?: number, methods?: ReadonlySet<string>, tenant?: string): TraceView[] {
    return this.recent.list(limit, methods, tenant);
  }

  /**
   * A request arrived: only its span's ids are chosen now, for the guest's `_meta`; the span is made at
   * its end. The record's `span` slot says which Tracing claimed it.
   */
  private start(record: RequestRecord): void {
    if (this.closed || record.span !== undefined) return;
    const context = parentContext(record);
    const parent = trace.getSpanContext(context);
    const ids: ClaimedIds = {
      by: this,
      parent: context,
      traceId: parent?.traceId ?? this.ids.generateTraceId(),
      spanId: this.ids.generateSpanId(),
    };
    record.span = ids;
    // Sampled unless the client's parent says otherwise: the provider's default sampler follows the parent.
    const flags = parent ? parent.traceFlags & TraceFlags.SAMPLED : TraceFlags.SAMPLED;
    record.traceparent = `00-${ids.traceId}-${ids.spanId}-0${flags}`;
  }

  private end(record: RequestRecord): void {
    const ids = record.span as ClaimedIds | undefined;
    if (ids?.by !== this) return;
    record.span = undefined;
    const endedAt = record.endedAt ?? performance.timeOrigin + performance.now();
    const transport = TRANSPORTS[record.transport];
    const span = this.ids.with(ids, () =>
      this.tracer.startSpan(
        requestSpanName(record),
        {
          kind: SpanKind.SERVER,
          startTime: record.startedAt,
          attributes: {
            "mcp.method.name": record.method,
            "jsonrpc.request.id": String(record.requestId),
            ...(record.sessionId ? { "mcp.session.id": record.sessionId } : {}),
            ...(transport ? { "network.transport": transport.transport } : {}),
            ...(transport?.protocol ? { "network.protocol.name": transport.protocol } : {}),
            "mcpvisor.transport": record.transport,
            "mcpvisor.tenant": record.tenant,
          },
        },
        ids.parent,
      ),
    );
    if (record.server) span.setAttribute("mcpvisor.server", record.server);
    if (record.tool && record.method === "tools/call") {
      span.setAttribute("gen_ai.tool.name", record.tool);
      span.setAttribute("gen_ai.operation.name", "execute_tool");
    }
    if (record.tool && record.method === "prompts/get") span.setAttribute("gen_ai.prompt.name", record.tool);
    if (record.outcome) span.setAttribute("mcpvisor.outcome", record.outcome);

    const context = trace.setSpan(ROOT_CONTEXT, span);
    const child = (name: string, start: number, end: number, attributes: Attributes = {}, parent: Context = context): Span => {
      const s = this.tracer.startSpan(name, { kind: SpanKind.INTERNAL, startTime: start, attributes }, parent);
      s.end(Math.max(start, end));
      return s;
    };
    // Every span says whose request it is: tenants see only their own spans.
    const server = { "mcpvisor.tenant": record.tenant, ...(record.server ? { "mcpvisor.server": record.server } : {}) };
    const routedAt = record.acquire?.start ?? record.guest?.sent ?? endedAt;
    child("mcpvisor.router.route", record.startedAt, routedAt, server);
    if (record.acquire) {
      child("mcpvisor.sandbox.acquire", record.acquire.start, record.acquire.end, {
        ...server,
        "mcpvisor.sandbox.source": record.acquire.source,
        // A warm-pool clone was resumed ahead of demand: taking it is all this request waited for.
        "mcpvisor.sandbox.resumed": record.acquire.source !== "warm-pool",
      });
    }
    if (record.guest) {
      const { sent } = record.guest;
      const answered = record.guest.answered ?? endedAt;
      const roundtrip = this.tracer.startSpan(
        "mcpvisor.sandbox.guest_roundtrip",
        { kind: SpanKind.INTERNAL, startTime: sent, attributes: { ...server, "mcpvisor.guest.answered": record.guest.answered !== undefined } },
        context,
      );
      const rtMs = Math.max(0, answered - sent);
      if (record.guest.guestMs !== undefined) {
        const guestMs = Math.min(Math.max(0, record.guest.guestMs), rtMs);
        const start = sent + (rtMs - guestMs) / 2;
        child(
          "mcpvisor.guest.server",
          start,
          start + guestMs,
          { ...server, "mcpvisor.guest.duration_ms": record.guest.guestMs, "mcpvisor.guest.placement": "centered" },
          trace.setSpan(ROOT_CONTEXT, roundtrip),
        );
      }
      roundtrip.end(Math.max(sent, answered));
    }

    if (record.outcome && record.outcome !== "ok") {
      const errorType = record.outcome === "tool_error" ? "tool_error" : (record.errorType ?? record.outcome);
      span.setAttribute("error.type", errorType);
      const rpcCode = /^rpc_(-?\d+)$/.exec(record.errorType ?? "")?.[1];
      if (rpcCode) span.setAttribute("rpc.response.status_code", rpcCode);
      span.setStatus({ code: SpanStatusCode.ERROR, message: errorType });
    }
    span.end(Math.max(record.startedAt, endedAt));
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
    await this.provider.shutdown().catch(() => undefined);
  }
}

/** The client's trace context, if it sent a valid one; else a new trace starts. */
/** A request's span ids and parent, chosen when it arrived, and the Tracing that will make its spans. */
interface ClaimedIds {
  by: Tracing;
  parent: Context;
  traceId: string;
  spanId: string;
}

/** Random ids, except that the request span made at a request's end gets the ids chosen at its start. */
class RequestSpanIds implements IdGenerator {
  private readonly random = new RandomIdGenerator();
  private preset: ClaimedIds | undefined;

  with<T>(ids: ClaimedIds, start: () => T): T {
    this.preset = ids;
    try {
      return start();
    } finally {
      this.preset = undefined;
    }
  }

  generateTraceId(): string {
    return this.preset?.traceId ?? this.random.generateTraceId();
  }

  generateSpanId(): string {
    return this.preset?.spanId ?? this.random.generateSpanId();
  }
}

function parentContext(record: RequestRecord): Context {
  if (!record.incomingTraceparent) return ROOT_CONTEXT;
  return propagator.extract(ROOT_CONTEXT, { traceparent: record.incomingTraceparent }, {
    get: (carrier, key) => (carrier as Record<string, string>)[key],
    keys: (carrier) => Object.keys(carrier as object),
  });
}
