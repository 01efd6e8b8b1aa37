import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { test } from "node:test";
import type { ServerPoolStats } from "../sandbox/pool.js";
import { events, type RequestRecord } from "./events.js";
import { createLogger, registerManifestSecrets, REDACTED } from "./log.js";
import { Metrics, methodLabel, sandboxCounts } from "./metrics.js";
import { requestLogFields, subscribeRequestLog } from "./request-log.js";
import { traceIdOf } from "./request-summary.js";

function request(overrides: Partial<RequestRecord>): RequestRecord {
  return { transport: "streamable-http", tenant: "local", subject: "local", sessionId: "s1", requestId: 1, method: "tools/call", startedAt: 1000, endedAt: 1012.5, outcome: "ok", ...overrides };
}

/** The value of one series in Prometheus text, or undefined when it is absent. */
function series(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const body = /\{(.*)\}/.exec(line)?.[1] ?? "";
    const have = Object.fromEntries([...body.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return undefined;
}

const POOL: ServerPoolStats[] = [
  {
    server: "exec",
    members: ["exec"],
    status: "ready",
    prestarted: 2,
    warm: 1,
    leased: 3,
    suspended: 0,
    sandboxes: [
      { id: "a", pid: 1, state: "active", source: "warm-pool", frozen: false },
      { id: "b", pid: 2, state: "idle", source: "prestarted", frozen: true },
      { id: "c", pid: 3, state: "idle", source: "prestarted", frozen: false },
    ],
    warmFrozen: 1,
    warmTarget: 3,
  },
  { server: "memory", members: ["memory"], status: "building", prestarted: 0, warm: 0, leased: 0, suspended: 0, sandboxes: [], warmFrozen: 0, warmTarget: 1 },
];

test("request records become tool call and request series; unknown tools and methods are not labels", async () => {
  const metrics = new Metrics({ poolStats: () => POOL, poolTargets: () => [{ server: "exec", prestarted: 2, warm: 1 }], processMetrics: false });
  try {
    events.requestEnd.publish(request({ server: "exec", tool: "run", outcome: "ok" }));
    events.requestEnd.publish(request({ server: "exec", tool: "run", outcome: "ok", endedAt: 3000 }));
    events.requestEnd.publish(request({ server: "exec", tool: "run", outcome: "tool_error" }));
    events.requestEnd.publish(request({ server: "exec", tool: "run", outcome: "error", errorType: "rpc_-32602" }));
    events.requestEnd.publish(request({ server: "exec", tool: "run_js", outcome: "timeout" }));
    // An unknown tool: the router leaves `tool` (and `server`) unset.
    events.requestEnd.publish(request({ outcome: "error", errorType: "rpc_-32602" }));
    events.requestEnd.publish(request({ method: "tools/list", outcome: "ok" }));
    events.requestEnd.publish(request({ method: "made/up/by/a/client", outcome: "error" }));
    events.requestEnd.publish(
      request({ server: "exec", tool: "run", transport: "sse", acquire: { start: 1000, end: 1004, source: "prestarted" } }),
    );
    const text = await metrics.text();

    assert.equal(series(text, "mcpvisor_tool_calls_total", { server: "exec", tool: "run", outcome: "ok" }), 3);
    assert.equal(series(text, "mcpvisor_tool_calls_total", { server: "exec", tool: "run", outcome: "tool_error" }), 1);
    assert.equal(series(text, "mcpvisor_tool_calls_total", { server: "exec", tool: "run", outcome: "error" }), 1);
    assert.equal(series(text, "mcpvisor_tool_calls_total", { server: "exec", tool: "run_js", outcome: "timeout" }), 1);
    assert.equal(series(text, "mcpvisor_tool_call_duration_seconds_count", { server: "exec", tool: "run" }), 5);
    // 12.5 ms lands in the 25 ms bucket, not the 10 ms one; the 2 s call only from 2.5 s on.
    assert.equal(series(text, "mcpvisor_tool_call_duration_seconds_bucket", { server: "exec", tool: "run", le: "0.01" }), 0);
    assert.equal(series(text, "mcpvisor_tool_call_duration_seconds_bucket", { server: "exec", tool: "run", le: "0.025" }), 4);
    assert.equal(series(text, "mcpvisor_tool_call_duration_seconds_bucket", { server: "exec", tool: "run", le: "2.5" }), 5);
    assert.match(text, /mcpvisor_tool_call_duration_seconds_bucket\{le="0\.001"/);
    assert.match(text, /mcpvisor_tool_call_duration_seconds_bucket\{le="60"/);
    assert.equal([...text.matchAll(/^mcpvisor_tool_calls_total\{/gm)].length, 4, "only the known tools' series");

    assert.equal(series(text, "mcpvisor_mcp_requests_total", { transport: "streamable-http", method: "tools/call", status: "error" }), 2);
    assert.equal(series(text, "mcpvisor_mcp_requests_total", { transport: "streamable-http", method: "tools/list", status: "ok" }), 1);
    assert.equal(series(text, "mcpvisor_mcp_requests_total", { method: "other", status: "error" }), 1);
    assert.equal(series(text, "mcpvisor_mcp_requests_total", { transport: "sse", method: "tools/call", status: "ok" }), 1);
    assert.doesNotMatch(text, /made\/up/);
    assert.equal(series(text, "mcpvisor_sandbox_acquire_duration_seconds_count", { server: "exec", source: "prestarted" }), 1);
  } finally {
    metrics.close();
  }
});

test("sandbox, template and session records become histograms and gauges", async () => {
  const metrics = new Metrics({ poolStats: () => POOL, poolTargets: () => [{ server: "exec", prestarted: 2, warm: 1 }], processMetrics: false });
  try {
    events.sandboxResume.publish({ server: "exec", sandboxId: "v1", from: "snapshot", source: "prestarted", durationMs: 7 });
    events.sandboxResume.publish({ server: "exec", sandboxId: "v2", from: "snapshot", source: "cold-vmm", durationMs: 30 });
    events.sandboxResume.publish({ server: "exec", sandboxId: "v3", from: "suspended", source: "suspended", durationMs: 40 });
    events.templateBuilt.publish({ server: "exec", coldBootMs: 8000, snapshotMs: 120 });
    events.sandboxSuspend.publish({ server: "exec", sandboxId: "v1", durationMs: 35, bytes: 5_000_000 });
    events.sandboxCrash.publish({ server: "exec", sandboxId: "v2", detail: "the server exited (code 1)" });
    events.sandboxTransition.publish({ server: "exec", sandboxId: "v1", from: "idle", to: "active" });
    events.sessionOpened.publish({ transport: "streamable-http", route: "exec" });
    events.sessionOpened.publish({ transport: "streamable-http", route: "*" });
    events.sessionOpened.publish({ transport: "websocket", route: "exec" });
    events.sessionClosed.publish({ transport: "streamable-http", route: "*" });
    const text = await metrics.text();

    assert.equal(series(text, "mcpvisor_sandbox_resume_duration_seconds_count", { server: "exec", from: "snapshot" }), 2);
    assert.equal(series(text, "mcpvisor_sandbox_resume_duration_seconds_bucket", { server: "exec", from: "snapshot", le: "0.01" }), 1);
    assert.equal(series(text, "mcpvisor_sandbox_resume_duration_seconds_count", { server: "exec", from: "suspended" }), 1);
    assert.equal(series(text, "mcpvisor_sandbox_cold_boot_duration_seconds_sum", { server: "exec" }), 8);
    assert.equal(series(text, "mcpvisor_sandbox_suspend_duration_seconds_count", { server: "exec" }), 1);
    assert.equal(series(text, "mcpvisor_sandbox_crashes_total", { server: "exec" }), 1);
    assert.equal(series(text, "mcpvisor_sandbox_transitions_total", { server: "exec", from: "idle", to: "active" }), 1);
    assert.equal(series(text, "mcpvisor_sessions", { transport: "streamable-http" }), 1);
    assert.equal(series(text, "mcpvisor_sessions", { transport: "websocket" }), 1);

    assert.equal(series(text, "mcpvisor_sandboxes", { server: "exec", state: "pooled" }), 2);
    assert.equal(series(text, "mcpvisor_sandboxes", { server: "exec", state: "idle" }), 3, "one warm clone and two leased idle ones");
    assert.equal(series(text, "mcpvisor_sandboxes", { server: "exec", state: "active" }), 1);
    assert.equal(series(text, "mcpvisor_sandboxes_frozen", { server: "exec" }), 2, "one warm clone and one idle leased one");
    assert.equal(series(text, "mcpvisor_sandboxes", { server: "exec", state: "suspended" }), 0);
    assert.equal(series(text, "mcpvisor_sandboxes", { server: "memory", state: "pooled" }), 0);
    assert.equal(series(text, "mcpvisor_pool_available", { server: "exec", kind: "warm" }), 1);
    assert.equal(series(text, "mcpvisor_pool_target", { server: "exec", kind: "prestarted" }), 2);
    assert.equal(series(text, "mcpvisor_pool_target", { server: "exec", kind: "warm" }), 3, "the manifest's 1, grown by demand");
    assert.equal(series(text, "mcpvisor_server_ready", { server: "exec" }), 1);
    assert.equal(series(text, "mcpvisor_server_ready", { server: "memory" }), 0);
  } finally {
    metrics.close();
  }
});

test("suspended sandboxes are the pool's count of them", () => {
  const stats: ServerPoolStats = { ...POOL[0]!, suspended: 4 };
  assert.deepEqual(sandboxCounts(stats), { pooled: 2, active: 1, idle: 3, suspended: 4 });
});

test("each instance has its own registry, with process metrics; close stops counting", async () => {
  const a = new Metrics();
  const b = new Metrics({ processMetrics: false });
  try {
    assert.match(await a.text(), /^process_cpu_user_seconds_total/m);
    assert.match(await a.text(), /^nodejs_eventloop_lag_seconds/m);
    assert.doesNotMatch(await b.text(), /process_cpu_user_seconds_total/);
    a.close();
    events.requestEnd.publish(request({ server: "exec", tool: "run" }));
    assert.equal(series(await a.text(), "mcpvisor_tool_calls_total", { server: "exec" }), undefined);
    assert.equal(series(await b.text(), "mcpvisor_tool_calls_total", { server: "exec", tool: "run", outcome: "ok" }), 1);
    assert.equal(methodLabel("tools/call"), "tools/call");
    assert.equal(methodLabel("tools/call2"), "other");
  } finally {
    a.close();
    b.close();
  }
});

function capture(format: "json" | "pretty" = "json") {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk, _enc, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { lines, log: createLogger("debug", { format, destination: { write: (line: string) => destination.write(line) } }) };
}

test("a request log line has server, tool, session, outcome, duration and trace id", () => {
  const { lines, log } = capture();
  const stop = subscribeRequestLog(log);
  try {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    events.requestEnd.publish(
      request({ server: "exec", tool: "run", sessionId: "sess-1", requestId: 7, incomingTraceparent: `00-${traceId}-00f067aa0ba902b7-01`, acquire: { start: 1000, end: 1003, source: "warm-pool" } }),
    );
    events.requestEnd.publish(request({ method: "resources/read", outcome: "error", errorType: "rpc_-32602", traceparent: `00-${"a".repeat(32)}-${"b".repeat(16)}-01`, incomingTraceparent: `00-${traceId}-00f067aa0ba902b7-01` }));
    events.requestEnd.publish(request({ method: "tools/list" }));
    const [call, failed, list] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 3);
    assert.deepEqual(
      { level: call!.level, msg: call!.msg, server: call!.server, tool: call!.tool, session: call!.session, outcome: call!.outcome, durationMs: call!.durationMs, traceId: call!.traceId, requestId: call!.requestId, acquireMs: call!.acquireMs },
      { level: 30, msg: "tool call", server: "exec", tool: "run", session: "sess-1", outcome: "ok", durationMs: 12.5, traceId, requestId: 7, acquireMs: 3 },
    );
    assert.equal(failed!.level, 40);
    assert.equal(failed!.traceId, "a".repeat(32), "the gateway's own trace context wins over the incoming one");
    assert.equal(failed!.errorType, "rpc_-32602");
    assert.equal(list!.level, 20);
  } finally {
    stop();
  }
  events.requestEnd.publish(request({}));
  assert.equal(lines.length, 3, "nothing after unsubscribing");
});

test("trace ids come only from well-formed traceparents", () => {
  assert.equal(traceIdOf("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), "4bf92f3577b34da6a3ce929d0e0e4736");
  assert.equal(traceIdOf(`00-${"0".repeat(32)}-00f067aa0ba902b7-01`), undefined);
  assert.equal(traceIdOf("garbage"), undefined);
  assert.equal(traceIdOf(undefined), undefined);
  assert.equal(requestLogFields(request({})).traceId, undefined);
});

test("secrets never reach a log line: secret fields, and manifest env values anywhere in a line", () => {
  const { lines, log } = capture();
  const value = "ghp_s3cr3t-value\"with-quote";
  registerManifestSecrets([
    { env: { GITHUB_TOKEN: value, PLAIN: "visible-value" } },
    { env: { DB_URL: "postgres://u:hunter2@db/x" }, secretEnv: ["DB_URL"] },
  ]);
  log.info({ headers: { authorization: "Bearer abc.def", host: "x" }, token: "t0ken", config: { apiKey: "k3y", password: "pw" }, env: { A: "b" } }, "fields");
  log.warn({ err: new Error(`server died: ${value} in stderr`) }, `message with postgres://u:hunter2@db/x and ${value}`);
  log.info({ note: "PLAIN is visible-value" }, "plain");
  const all = lines.join("");
  for (const secret of ["Bearer abc.def", "t0ken", "k3y", '"pw"', "ghp_s3cr3t", "hunter2", '"b"']) assert.ok(!all.includes(secret), `${secret} leaked: ${all}`);
  const first = JSON.parse(lines[0]!) as { headers: { authorization: string; host: string }; config: { apiKey: string } };
  assert.equal(first.headers.authorization, REDACTED);
  assert.equal(first.headers.host, "x");
  assert.equal(first.config.apiKey, REDACTED);
  assert.match(lines[1]!, /\[REDACTED\]/);
  assert.match(lines[2]!, /visible-value/);
});

test("pretty output is human-readable and still scrubbed", () => {
  const { lines, log } = capture("pretty");
  log.info({ server: "exec", token: "pretty-t0ken" }, "tool call");
  assert.equal(lines.length, 1);
  assert.doesNotMatch(lines[0]!, /^\{/);
  assert.match(lines[0]!, /INFO/);
  assert.match(lines[0]!, /tool call/);
  assert.doesNotMatch(lines[0]!, /pretty-t0ken/);
});
