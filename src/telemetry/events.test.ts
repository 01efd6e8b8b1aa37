import assert from "node:assert/strict";
import { channel, subscribe, unsubscribe } from "node:diagnostics_channel";
import { test } from "node:test";
import { events, flushTelemetry, publishSoon, type RequestRecord } from "./events.js";
import { Metrics } from "./metrics.js";

test("publishSoon holds records off the caller's path and hands them over in order, a moment later", async () => {
  const target = channel("mcpvisor:test:soon");
  const seen: number[] = [];
  const onMessage = (message: unknown) => seen.push((message as { n: number }).n);
  subscribe(target.name, onMessage);
  try {
    publishSoon(target, { n: 1 });
    publishSoon(target, { n: 2 });
    assert.deepEqual(seen, [], "nothing is published while the caller is still answering");
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(seen, [1, 2]);
  } finally {
    unsubscribe(target.name, onMessage);
  }
});

test("flushTelemetry publishes what is held at once, and readers such as /metrics flush before they read", async () => {
  const metrics = new Metrics();
  try {
    const record: RequestRecord = { transport: "streamable-http", tenant: "local", subject: "local", sessionId: "s", requestId: 1, method: "tools/call", server: "exec", tool: "run", startedAt: 1000, endedAt: 1001, outcome: "ok" };
    publishSoon(events.requestEnd, record);
    const text = await metrics.text();
    assert.match(text, /mcpvisor_tool_calls_total\{server="exec",tool="run",outcome="ok"\} 1/);
    flushTelemetry(); // nothing left: the call is counted once
    assert.match(await metrics.text(), /mcpvisor_tool_calls_total\{server="exec",tool="run",outcome="ok"\} 1/);
  } finally {
    metrics.close();
  }
});
