import assert from "node:assert/strict";
import { request } from "node:http";
import { test } from "node:test";
import type { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { connect, serversDirWith, startReadyGateway } from "./helpers.js";

/** Every sample of one metric in Prometheus text, with its labels. */
export function samples(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  const found: { labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const labels = Object.fromEntries([...(match[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1]!, m[2]!]));
    found.push({ labels, value: Number(match[3]) });
  }
  return found;
}

function value(text: string, name: string, labels: Record<string, string>): number {
  return samples(text, name)
    .filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

/** GET /metrics with a Host header of our choosing (fetch does not allow setting it). */
function scrape(port: number, host = `127.0.0.1:${port}`): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path: "/metrics", headers: { host } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, type: String(res.headers["content-type"]), body }));
    });
    req.on("error", reject);
    req.end();
  });
}

test("GET /metrics counts real tool calls by outcome, resumes, sessions and sandboxes", { timeout: 120_000 }, async () => {
  const serversDir = await serversDirWith({ exec: (m) => ({ timeouts: { ...m.timeouts, callMs: 2000 } }) });
  const gateway = await startReadyGateway({ servers: ["exec"], serversDir });
  try {
    const client = await connect(gateway.url("exec"));
    const ok = (await client.callTool({ name: "run", arguments: { command: "echo hi" } })) as CallToolResult;
    assert.equal(ok.isError, false);
    const toolError = (await client.callTool({ name: "run", arguments: { command: "sleep 5", timeoutMs: 100 } })) as CallToolResult;
    assert.equal(toolError.isError, true, "a command past its own time limit is a tool error");
    await assert.rejects(client.callTool({ name: "run", arguments: { command: "" } }), /Invalid arguments/);
    // A live clone may have tools its template did not list, so the call goes to the server, which refuses it.
    const unknown = await client.callTool({ name: "no_such_tool_x9", arguments: {} }).then((r) => (r as CallToolResult).isError, () => true);
    assert.equal(unknown, true);
    await assert.rejects(client.callTool({ name: "run", arguments: { command: "sleep 30", timeoutMs: 60_000 } }), /took longer than 2000 ms/);

    const during = await scrape(gateway.port);
    assert.equal(during.status, 200);
    assert.match(during.type, /^text\/plain; version=0\.0\.4/);
    const text = during.body;
    const calls = { server: "exec", tool: "run" };
    assert.equal(value(text, "mcpvisor_tool_calls_total", { ...calls, outcome: "ok" }), 1);
    assert.equal(value(text, "mcpvisor_tool_calls_total", { ...calls, outcome: "tool_error" }), 1);
    assert.equal(value(text, "mcpvisor_tool_calls_total", { ...calls, outcome: "error" }), 1);
    assert.equal(value(text, "mcpvisor_tool_calls_total", { ...calls, outcome: "timeout" }), 1);
    assert.doesNotMatch(text, /no_such_tool_x9/, "an unknown tool name is never a label value");
    assert.equal(value(text, "mcpvisor_tool_call_duration_seconds_count", calls), 4);
    assert.ok(value(text, "mcpvisor_tool_call_duration_seconds_sum", calls) >= 2, "the timed-out call took 2 s");
    assert.equal(value(text, "mcpvisor_mcp_requests_total", { transport: "streamable-http", method: "tools/call" }), 5);
    assert.equal(value(text, "mcpvisor_mcp_requests_total", { transport: "streamable-http", method: "tools/call", status: "timeout" }), 1);
    assert.equal(value(text, "mcpvisor_mcp_requests_total", { transport: "streamable-http", method: "initialize", status: "ok" }), 1);
    assert.ok(value(text, "mcpvisor_sandbox_resume_duration_seconds_count", { server: "workspace", from: "snapshot" }) >= 1);
    assert.ok(value(text, "mcpvisor_sandbox_acquire_duration_seconds_count", { server: "exec" }) >= 1);
    assert.equal(value(text, "mcpvisor_sessions", { transport: "streamable-http" }), 1);
    for (const state of ["pooled", "active", "idle", "suspended"]) {
      assert.equal(samples(text, "mcpvisor_sandboxes").filter((s) => s.labels.server === "workspace" && s.labels.state === state).length, 1, state);
    }
    assert.equal(value(text, "mcpvisor_server_ready", { server: "exec" }), 1);
    assert.ok(samples(text, "mcpvisor_pool_target").length === 2);
    assert.match(text, /^# TYPE mcpvisor_sandbox_cold_boot_duration_seconds histogram$/m);
    assert.match(text, /^# TYPE mcpvisor_sandbox_suspend_duration_seconds histogram$/m);
    assert.match(text, /^process_resident_memory_bytes \d+/m);
    assert.match(text, /^nodejs_heap_size_used_bytes \d+/m);

    await (client.transport as StreamableHTTPClientTransport).terminateSession();
    await client.close();
    // A scraper addresses the gateway by its own name for it; /metrics is served like /healthz.
    const deadline = Date.now() + 5000;
    let foreign = await scrape(gateway.port, "mcpvisor.monitoring.svc:8080");
    while (value(foreign.body, "mcpvisor_sessions", { transport: "streamable-http" }) !== 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      foreign = await scrape(gateway.port, "mcpvisor.monitoring.svc:8080");
    }
    assert.equal(foreign.status, 200);
    assert.equal(value(foreign.body, "mcpvisor_sessions", { transport: "streamable-http" }), 0, "the session ended");
  } finally {
    await gateway.close();
  }
});
