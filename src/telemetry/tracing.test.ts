import assert from "node:assert/strict";
import { requestTraceparent } from "./trace-context.js";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { events, type Outcome, type RequestRecord } from "./events.js";
import { percentiles, RecentActivity } from "./recent-activity.js";
import { Tracing, type SpanView, type TraceView } from "./tracing.js";

/** Publishes a synthetic request on the channels, as the router does: start, phases, end. */
function simulate(partial: Partial<RequestRecord>, phases: (record: RequestRecord, t0: number) => void): RequestRecord {
  const t0 = 1_700_000_000_000.25;
  const record: RequestRecord = {
    transport: "streamable-http",
    tenant: "local",
    subject: "local",
    sessionId: "sess-1",
    requestId: 7,
    method: "tools/call",
    startedAt: t0,
    // As the router does when a request arrives.
    traceparent: requestTraceparent(partial.incomingTraceparent),
    ...partial,
  };
  events.requestStart.publish(record);
  phases(record, t0);
  events.requestEnd.publish(record);
  return record;
}

/** exec's `run` called: routed, sent to the guest (1 ms inside it), answered, ended with `outcome`. */
function simulatedToolCall(outcome: Outcome): RequestRecord {
  return simulate({}, (r, t0) => {
    r.server = "exec";
    r.tool = "run";
    r.guest = { sent: t0 + 1, answered: t0 + 3, guestMs: 1 };
    r.endedAt = t0 + 4;
    r.outcome = outcome;
  });
}

function byName(trace: TraceView, name: string): SpanView {
  const span = trace.spans.find((s) => s.name === name);
  assert.ok(span, `span ${name} in ${trace.spans.map((s) => s.name).join(", ")}`);
  return span;
}

describe("Tracing", () => {
  let tracing: Tracing;
  before(() => {
    tracing = new Tracing({ env: {} });
  });
  after(() => tracing.close());

  it("builds one trace per request with route, acquire, round trip and guest spans", () => {
    const record = simulate({}, (r, t0) => {
      r.server = "exec";
      r.tool = "run";
      r.acquire = { start: t0 + 1, end: t0 + 41, source: "prestarted" };
      r.guest = { sent: t0 + 42, answered: t0 + 62, guestMs: 10 };
      r.endedAt = t0 + 63;
      r.outcome = "ok";
    });
    assert.match(record.traceparent!, /^00-[\da-f]{32}-[\da-f]{16}-01$/);
    const [, traceId, spanId] = record.traceparent!.split("-");
    const trace = tracing.recent.get(traceId!)!;
    assert.ok(trace, "trace recorded");
    assert.equal(trace.spans.length, 5);
    assert.deepEqual(
      trace.spans.map((s) => s.name),
      ["tools/call run", "mcpvisor.router.route", "mcpvisor.sandbox.acquire", "mcpvisor.sandbox.guest_roundtrip", "mcpvisor.guest.server"],
      "tree order",
    );

    const request = byName(trace, "tools/call run");
    assert.equal(request.spanId, spanId, "the guest gets the request span as its parent");
    assert.equal(request.parentSpanId, undefined);
    assert.equal(request.kind, "server");
    assert.equal(request.status.code, "unset");
    assert.deepEqual(
      {
        method: request.attributes["mcp.method.name"],
        session: request.attributes["mcp.session.id"],
        id: request.attributes["jsonrpc.request.id"],
        tool: request.attributes["gen_ai.tool.name"],
        op: request.attributes["gen_ai.operation.name"],
        transport: request.attributes["network.transport"],
        protocol: request.attributes["network.protocol.name"],
        server: request.attributes["mcpvisor.server"],
      },
      { method: "tools/call", session: "sess-1", id: "7", tool: "run", op: "execute_tool", transport: "tcp", protocol: "http", server: "exec" },
    );
    assert.ok(Math.abs(request.durationMs - 63) < 0.01);

    const route = byName(trace, "mcpvisor.router.route");
    const acquire = byName(trace, "mcpvisor.sandbox.acquire");
    const roundtrip = byName(trace, "mcpvisor.sandbox.guest_roundtrip");
    const guest = byName(trace, "mcpvisor.guest.server");
    for (const child of [route, acquire, roundtrip]) assert.equal(child.parentSpanId, request.spanId, child.name);
    assert.equal(guest.parentSpanId, roundtrip.spanId);
    assert.equal(acquire.attributes["mcpvisor.sandbox.source"], "prestarted");
    assert.equal(acquire.attributes["mcpvisor.sandbox.resumed"], true);
    assert.ok(Math.abs(route.durationMs - 1) < 0.01);
    assert.ok(Math.abs(acquire.durationMs - 40) < 0.01);
    assert.ok(Math.abs(roundtrip.durationMs - 20) < 0.01);
    assert.ok(Math.abs(guest.durationMs - 10) < 0.01);
    // Centered in the round trip: 5 ms of channel latency on each side.
    assert.ok(Math.abs(guest.startMs - (roundtrip.startMs + 5)) < 0.01);
    assert.ok(Math.abs(trace.startMs - record.startedAt) < 0.01);
    assert.equal(trace.rootName, "tools/call run");
  });

  it("continues the client's traceparent: same trace id, the client's span as parent", () => {
    const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
    const clientSpan = "00f067aa0ba902b7";
    const record = simulate({ incomingTraceparent: `00-${clientTrace}-${clientSpan}-01`, requestId: "abc" }, (r, t0) => {
      r.server = "exec";
      r.guest = { sent: t0 + 2, answered: t0 + 5 };
      r.endedAt = t0 + 6;
      r.outcome = "ok";
    });
    const [, traceId, spanId] = record.traceparent!.split("-");
    assert.equal(traceId, clientTrace);
    assert.notEqual(spanId, clientSpan);
    const trace = tracing.recent.get(clientTrace)!;
    const request = byName(trace, "tools/call");
    assert.equal(request.parentSpanId, clientSpan);
    assert.equal(request.spanId, spanId);
    assert.equal(trace.rootName, "tools/call");
    // Without guestMs there is no guest span, and without an acquisition no acquire span.
    assert.deepEqual(trace.spans.map((s) => s.name).sort(), ["mcpvisor.router.route", "mcpvisor.sandbox.guest_roundtrip", "tools/call"]);
  });

  it("ignores a malformed traceparent and starts a new trace", () => {
    const record = simulate({ incomingTraceparent: "00-zzzz-nothex-01" }, (r, t0) => {
      r.endedAt = t0 + 1;
      r.outcome = "ok";
    });
    assert.match(record.traceparent!, /^00-[\da-f]{32}-[\da-f]{16}-01$/);
    const trace = tracing.recent.get(record.traceparent!.split("-")[1]!)!;
    assert.equal(byName(trace, "tools/call").parentSpanId, undefined);
  });

  it("marks errors with error.type and status", () => {
    const failed = simulate({}, (r, t0) => {
      r.server = "exec";
      r.endedAt = t0 + 3;
      r.outcome = "timeout";
      r.errorType = "CALL_TIMEOUT";
    });
    const request = byName(tracing.recent.get(failed.traceparent!.split("-")[1]!)!, "tools/call");
    assert.equal(request.status.code, "error");
    assert.equal(request.attributes["error.type"], "CALL_TIMEOUT");

    const toolError = simulatedToolCall("tool_error");
    const trace = tracing.recent.get(toolError.traceparent!.split("-")[1]!)!;
    assert.equal(byName(trace, "tools/call run").attributes["error.type"], "tool_error");
    assert.equal(trace.error, true);

    const rpc = simulate({ method: "prompts/get" }, (r, t0) => {
      r.endedAt = t0 + 1;
      r.outcome = "error";
      r.errorType = "rpc_-32602";
    });
    const span = byName(tracing.recent.get(rpc.traceparent!.split("-")[1]!)!, "prompts/get");
    assert.equal(span.attributes["rpc.response.status_code"], "-32602");
    assert.equal(span.attributes["error.type"], "rpc_-32602");
  });

  it("keeps only the last N traces, newest first", async () => {
    const small = new Tracing({ env: {}, maxTraces: 3 });
    try {
      // The first Tracing subscribed claims every record; a second one in the process sees none.
      const claimed = simulate({}, (r, t0) => {
        r.endedAt = t0 + 1;
        r.outcome = "ok";
      });
      assert.equal(small.traces().length, 0);
      assert.ok(tracing.recent.get(claimed.traceparent!.split("-")[1]!));
    } finally {
      await small.close();
    }
    const ring = new Tracing({ env: {}, maxTraces: 3 });
    await tracing.close(); // now the ring is the only subscriber
    try {
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        const r = simulate({ requestId: i }, (rec, t0) => {
          rec.endedAt = t0 + 1;
          rec.outcome = "ok";
        });
        ids.push(r.traceparent!.split("-")[1]!);
      }
      assert.deepEqual(ring.traces().map((t) => t.traceId), ids.slice(2).reverse());
      assert.equal(ring.traces(1).length, 1);
    } finally {
      await ring.close();
    }
  });
});

describe("RecentActivity", () => {
  it("keeps calls with their phases and trace id, resume percentiles, open sessions", () => {
    const activity = new RecentActivity({ maxCalls: 2 });
    try {
      const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
      simulate({ method: "tools/list" }, (r, t0) => {
        r.endedAt = t0 + 1;
        r.outcome = "ok";
      });
      for (const tool of ["a", "b", "c"]) {
        simulate({ incomingTraceparent: `00-${traceId}-00f067aa0ba902b7-01` }, (r, t0) => {
          r.server = "exec";
          r.tool = tool;
          r.acquire = { start: t0, end: t0 + 30, source: "warm-pool" };
          r.guest = { sent: t0 + 30, answered: t0 + 40, guestMs: 8 };
          r.endedAt = t0 + 41;
          r.outcome = "ok";
        });
      }
      const calls = activity.recentCalls();
      assert.deepEqual(calls.map((c) => c.tool), ["c", "b"], "newest first, list calls left out, bounded");
      assert.deepEqual(
        { ...calls[0], at: 0 },
        {
          at: 0, method: "tools/call", server: "exec", tool: "c", outcome: "ok", durationMs: 41, acquireMs: 30, acquireSource: "warm-pool",
          roundtripMs: 10, guestMs: 8, transport: "streamable-http", tenant: "local", sessionId: "sess-1", traceId,
        },
      );

      for (const ms of [10, 20, 30, 40, 100]) {
        events.sandboxResume.publish({ server: "exec", sandboxId: "x", from: "snapshot", source: "prestarted", durationMs: ms });
      }
      const resume = activity.resumeLatency().exec!;
      assert.deepEqual(resume, { count: 5, p50: 30, p95: 100, max: 100, bySource: { "prestarted from snapshot": 5 } });

      events.sessionOpened.publish({ transport: "websocket", route: "*" });
      events.sessionOpened.publish({ transport: "websocket", route: "exec" });
      events.sessionClosed.publish({ transport: "websocket", route: "*" });
      assert.deepEqual(activity.openSessions(), { websocket: 1 });
    } finally {
      activity.close();
    }
  });

  it("summarizes with nearest-rank percentiles", () => {
    assert.deepEqual(percentiles([]), { count: 0, p50: 0, p95: 0, max: 0 });
    const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
    assert.deepEqual(percentiles(hundred), { count: 100, p50: 50, p95: 95, max: 100 });
  });
});

describe("OTLP export", () => {
  it("sends spans to OTEL_EXPORTER_OTLP_ENDPOINT as OTLP/HTTP JSON", async () => {
    const received: { path: string; body: string }[] = [];
    const collector = createServer((req, res) => {
      let body = "";
      req.on("data", (chunk: Buffer) => (body += chunk.toString()));
      req.on("end", () => {
        received.push({ path: req.url ?? "", body });
        res.writeHead(200, { "content-type": "application/json" }).end("{}");
      });
    });
    await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", resolve));
    const saved = process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
    const tracing = new Tracing();
    try {
      assert.equal(tracing.exporting, true);
      const record = simulatedToolCall("ok");
      await tracing.flush();
      assert.equal(received.length, 1);
      assert.equal(received[0]!.path, "/v1/traces");
      const body = JSON.parse(received[0]!.body) as {
        resourceSpans: { resource: { attributes: { key: string; value: { stringValue?: string } }[] }; scopeSpans: { spans: { name: string; traceId: string }[] }[] }[];
      };
      const spans = body.resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans));
      assert.deepEqual(spans.map((s) => s.name).sort(), [
        "mcpvisor.guest.server",
        "mcpvisor.router.route",
        "mcpvisor.sandbox.guest_roundtrip",
        "tools/call run",
      ]);
      assert.ok(spans.every((s) => s.traceId === record.traceparent!.split("-")[1]));
      const service = body.resourceSpans[0]!.resource.attributes.find((a) => a.key === "service.name");
      assert.equal(service?.value.stringValue, "mcpvisor");
    } finally {
      await tracing.close();
      if (saved === undefined) delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
      else process.env.OTEL_EXPORTER_OTLP_ENDPOINT = saved;
      collector.close();
    }
  });
});
