import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import type { JsonRpcMessage } from "../sandbox/agent/protocol.js";
import { ServerPool } from "../src/sandbox/server-pool.js";
import type { SpanView, TraceView } from "../src/telemetry/tracing.js";
import { startReadyGateway } from "./helpers.js";

type ReadyGateway = Awaited<ReturnType<typeof startReadyGateway>>;

const hex = (bytes: number) => randomBytes(bytes).toString("hex");

describe("request traces through a real gateway", { timeout: 300_000 }, () => {
  let gateway: ReadyGateway;
  const clients: Client[] = [];
  /** Every message the gateway wrote into a guest, as it left the host. */
  const toGuest: JsonRpcMessage[] = [];

  before(async () => {
    gateway = await startReadyGateway({ servers: ["exec"] });
    // Watch what the router hands to sandboxes: that is what goes down the agent channel into the guest.
    // Leases hide their sandbox; the test reaches past them, at the one place clones are handed out.
    const acquire = ServerPool.prototype.acquire;
    ServerPool.prototype.acquire = async function (this: ServerPool) {
      const sandbox = await acquire.call(this);
      const send = sandbox.send.bind(sandbox);
      sandbox.send = (server: string, message: JsonRpcMessage) => {
        toGuest.push(structuredClone(message));
        send(server, message);
      };
      return sandbox;
    };
  });
  after(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await gateway?.close();
  });

  async function open(headers?: Record<string, string>): Promise<Client> {
    const client = new Client({ name: "tracing-test", version: "0.0.0" });
    await client.connect(new StreamableHTTPClientTransport(new URL(gateway.url("exec")), headers ? { requestInit: { headers } } : {}));
    clients.push(client);
    return client;
  }

  async function trace(traceId: string): Promise<TraceView> {
    const res = await fetch(`http://127.0.0.1:${gateway.port}/api/traces?traceId=${traceId}`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as { traces: TraceView[] };
    assert.equal(body.traces.length, 1, `trace ${traceId} is listed`);
    return body.traces[0]!;
  }

  function only(trace: TraceView, name: string, parent?: SpanView): SpanView {
    const spans = trace.spans.filter((s) => s.name === name && (!parent || s.parentSpanId === parent.spanId));
    assert.equal(spans.length, 1, `one ${name} in ${trace.spans.map((s) => s.name).join(", ")}`);
    return spans[0]!;
  }

  /** The tools/call message the guest received for this trace, and its `_meta.traceparent`. */
  function guestTraceparent(traceId: string): string {
    const calls = toGuest.filter((m) => m.method === "tools/call");
    const found = calls
      .map((m) => (m.params as { _meta?: { traceparent?: string } })._meta?.traceparent)
      .filter((t): t is string => typeof t === "string" && t.split("-")[1] === traceId);
    assert.equal(found.length, 1, `one tools/call into the guest carries trace ${traceId}`);
    return found[0]!;
  }

  test("a traceparent in _meta is continued; the trace shows routing, acquire, the guest round trip and time in the guest", async () => {
    const traceId = hex(16);
    const clientSpan = hex(8);
    const client = await open();
    const result = (await client.callTool({
      name: "run",
      arguments: { command: "echo traced" },
      _meta: { traceparent: `00-${traceId}-${clientSpan}-01` },
    })) as CallToolResult;
    assert.equal((result.structuredContent as { stdout: string }).stdout.trim(), "traced");

    const t = await trace(traceId);
    const request = only(t, "tools/call run");
    assert.equal(request.parentSpanId, clientSpan, "the request span is a child of the client's span");
    assert.equal(request.kind, "server");
    assert.equal(request.attributes["mcp.method.name"], "tools/call");
    assert.equal(request.attributes["gen_ai.tool.name"], "run");
    assert.equal(request.attributes["mcpvisor.server"], "exec");
    assert.equal(typeof request.attributes["mcp.session.id"], "string");
    assert.equal(typeof request.attributes["jsonrpc.request.id"], "string");

    only(t, "mcpvisor.router.route", request);
    const acquire = only(t, "mcpvisor.sandbox.acquire", request);
    assert.match(String(acquire.attributes["mcpvisor.sandbox.source"]), /^(warm-pool|prestarted|cold-vmm)$/);
    const roundtrip = only(t, "mcpvisor.sandbox.guest_roundtrip", request);
    const inside = only(t, "mcpvisor.guest.server", roundtrip);
    assert.ok(inside.durationMs > 0 && inside.durationMs <= roundtrip.durationMs);
    assert.ok(acquire.endMs <= roundtrip.startMs + 0.01, "the guest is called after the sandbox is acquired");
    assert.ok(roundtrip.endMs <= request.endMs + 0.01);

    // The guest got the gateway's request span as its parent, in the request's _meta.
    assert.equal(guestTraceparent(traceId), `00-${traceId}-${request.spanId}-01`);

    // The same session's second call needs no acquisition.
    const second = hex(16);
    await client.callTool({ name: "run", arguments: { command: "true" }, _meta: { traceparent: `00-${second}-${hex(8)}-01` } });
    const t2 = await trace(second);
    assert.equal(t2.spans.filter((s) => s.name === "mcpvisor.sandbox.acquire").length, 0);
    only(t2, "mcpvisor.guest.server");
  });

  test("a traceparent HTTP header is continued and passed into the guest", async () => {
    const traceId = hex(16);
    const clientSpan = hex(8);
    const client = await open({ traceparent: `00-${traceId}-${clientSpan}-01` });
    await client.callTool({ name: "run", arguments: { command: "echo header" } });

    const t = await trace(traceId);
    // The header came with every HTTP request of this client (initialize too): all in the client's trace.
    const request = only(t, "tools/call run");
    assert.equal(request.parentSpanId, clientSpan);
    only(t, "mcpvisor.sandbox.acquire", request);
    only(t, "mcpvisor.guest.server");
    assert.equal(guestTraceparent(traceId), `00-${traceId}-${request.spanId}-01`);
  });

  test("without trace context, each request still gets its own trace, and /api/status lists the calls", async () => {
    const client = await open();
    await client.callTool({ name: "run", arguments: { command: "echo untraced" } });
    const res = await fetch(`http://127.0.0.1:${gateway.port}/api/traces?limit=1&method=tools/call`);
    const { traces } = (await res.json()) as { traces: TraceView[] };
    const newest = traces[0]!;
    assert.equal(newest.rootName, "tools/call run", "the newest tools/call trace");
    const request = only(newest, "tools/call run");
    assert.equal(request.parentSpanId, undefined, "a new trace starts at the gateway");
    assert.equal(guestTraceparent(newest.traceId), `00-${newest.traceId}-${request.spanId}-01`);

    const status = (await (await fetch(`http://127.0.0.1:${gateway.port}/api/status`)).json()) as {
      servers: { name: string; tools: { name: string }[] }[];
      calls: { server: string; tool: string; outcome: string; traceId: string }[];
    };
    assert.deepEqual(status.calls[0]!, { ...status.calls[0]!, server: "exec", tool: "run", outcome: "ok", traceId: newest.traceId });
    assert.deepEqual(status.servers[0]!.tools.map((t) => t.name).sort(), ["download", "output", "run", "run_js", "start", "stop", "upload"]);
  });
});
