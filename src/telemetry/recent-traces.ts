import { SpanKind, SpanStatusCode, type Attributes } from "@opentelemetry/api";
import type { ReadableSpan, SpanProcessor } from "@opentelemetry/sdk-trace-base";
import { flushTelemetry } from "./events.js";

/** A span as `GET /api/traces` and the status page show it. */
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

/** One trace's spans kept in memory (`RecentTraces`), with its extent. */
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

const MAX_SPANS_PER_TRACE = 500;

function ofTenant(spans: SpanView[], tenant: string | undefined): SpanView[] {
  return tenant === undefined ? spans : spans.filter((s) => s.attributes["mcpvisor.tenant"] === tenant);
}

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
