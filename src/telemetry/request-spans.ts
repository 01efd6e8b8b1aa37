import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span, type Tracer } from "@opentelemetry/api";
import { RandomIdGenerator, type IdGenerator } from "@opentelemetry/sdk-trace-base";
import type { RequestRecord } from "./events.js";
import type { Tracing } from "./tracing.js";

/**
 * A finished request's record made into spans, with the record's times. The request span (kind SERVER,
 * named per the OpenTelemetry MCP conventions `{mcp.method.name} {target}`) has the request's phases
 * as children:
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
 */

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

/** A request's span ids and parent, chosen when it arrived, and the Tracing that will make its spans. */
export interface ClaimedIds {
  by: Tracing;
  parent: Context;
  traceId: string;
  spanId: string;
}

/** Random ids, except that the request span made at a request's end gets the ids chosen at its start. */
export class RequestSpanIds implements IdGenerator {
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

/**
 * Makes the spans of a request that has ended: the request span with the ids claimed at its start
 * (a child of the client's context, if any), then one child per phase it went through.
 */
export function recordRequestSpans(tracer: Tracer, ids: RequestSpanIds, claimed: ClaimedIds, record: RequestRecord): void {
  const endedAt = record.endedAt ?? performance.timeOrigin + performance.now();
  const transport = TRANSPORTS[record.transport];
  const span = ids.with(claimed, () =>
    tracer.startSpan(
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
      claimed.parent,
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
    const s = tracer.startSpan(name, { kind: SpanKind.INTERNAL, startTime: start, attributes }, parent);
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
    const roundtrip = tracer.startSpan(
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
