/**
 * Per-tenant limits, tried from outside: request rate (429 + Retry-After on HTTP, a JSON-RPC error on a
 * WebSocket), open sessions, open streams, running sandboxes (the tenant's least recently used idle one
 * is suspended, nothing lost) and saved sessions (the least recently saved one is evicted). Each tenant's limits are its own.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { connectAs, endSession, INITIALIZE, post, tenantsFileWith } from "./auth-helpers.js";
import { eventually, startReadyGateway } from "./helpers.js";

const UNBOUNDED = { requestsPerSecond: 1000, burst: 1000, maxSessions: 100, maxStreams: 100, maxSandboxes: 100, maxSuspended: 100 };

describe("tenant quotas", { timeout: 240_000 }, () => {
  let gateway: Awaited<ReturnType<typeof startReadyGateway>>;
  let keys: Record<string, string>;
  let base: string;
  const as = (tenant: string) => ({ authorization: `Bearer ${keys[tenant]}` });

  before(async () => {
    const file = await tenantsFileWith({
      defaults: UNBOUNDED,
      tenants: {
        // Each rate test has its tenant, so neither waits for the other's bucket to refill.
        slow: { limits: { requestsPerSecond: 1, burst: 3 } },
        "slow-ws": { limits: { requestsPerSecond: 1, burst: 3 } },
        few: { limits: { maxSessions: 2, maxStreams: 1 } },
        tight: { limits: { maxSandboxes: 1, maxSuspended: 1 } },
        other: {},
      },
    });
    keys = file.keys;
    gateway = await startReadyGateway({ servers: ["memory"], tenantsFile: file.path, auditLog: "off" }, { pool: { prestarted: 0, warm: 0 } });
    base = `http://127.0.0.1:${gateway.port}`;
  });
  after(async () => {
    await gateway?.close();
  });

  test("request rate: past the burst, 429 with Retry-After; other tenants are not slowed", async () => {
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 5; i++) {
      const response = await post(`${base}/servers/memory/mcp`, { jsonrpc: "2.0", id: i, method: "ping" }, as("slow"));
      statuses.push(response.status);
      if (response.status === 429) {
        retryAfter = response.headers.get("retry-after");
        const body = (await response.json()) as { error: { code: number; message: string } };
        assert.equal(body.error.code, -32029);
        assert.match(body.error.message, /more than 1 requests per second/);
      } else await response.body?.cancel();
    }
    assert.deepEqual(statuses.slice(0, 3), [200, 200, 200]);
    assert.ok(statuses.slice(3).every((s) => s === 429), `statuses ${statuses}`);
    assert.ok(Number(retryAfter) >= 1);
    const other = await post(`${base}/servers/memory/mcp`, { jsonrpc: "2.0", id: 1, method: "ping" }, as("other"));
    assert.equal(other.status, 200);
  });

  test("request rate on a WebSocket: a request past it gets a JSON-RPC error, the socket stays", async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${gateway.port}/servers/memory/ws`, "mcp", { headers: as("slow-ws") });
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    const replies: Array<{ id: number; result?: unknown; error?: { code: number; data?: { retryAfterSeconds: number } } }> = [];
    ws.on("message", (data) => replies.push(JSON.parse(data.toString())));
    // The upgrade took one token.
    for (let id = 1; id <= 4; id++) ws.send(JSON.stringify({ jsonrpc: "2.0", id, method: "ping" }));
    await eventually(() => replies.length === 4, "four replies");
    const limited = replies.filter((r) => r.error?.code === -32029);
    assert.ok(limited.length >= 1 && limited.length <= 2, JSON.stringify(replies));
    assert.ok(limited.every((r) => (r.error!.data!.retryAfterSeconds ?? 0) >= 1));
    assert.equal(ws.readyState, WebSocket.OPEN);
    ws.close();
  });

  test("open sessions and open streams are capped per tenant; ending one frees its place", async () => {
    const first = await connectAs(`${base}/servers/memory/mcp`, keys.few!);
    const second = await connectAs(`${base}/servers/memory/mcp`, keys.few!);
    const third = await post(`${base}/servers/memory/mcp`, INITIALIZE, as("few"));
    assert.equal(third.status, 429);
    assert.match(((await third.json()) as { error: { message: string } }).error.message, /2 open sessions, its limit/);
    assert.equal((await post(`${base}/servers/memory/mcp`, INITIALIZE, as("other"))).status, 200, "another tenant is not affected");
    await endSession(first);
    await eventually(async () => (await gateway.router.tenantUsage("few")).openSessions === 1, "the ended session to be released");
    const again = await connectAs(`${base}/servers/memory/mcp`, keys.few!);
    await endSession(again);
    await endSession(second);

    const controller = new AbortController();
    const stream = await fetch(`${base}/sse`, { headers: { ...as("few"), accept: "text/event-stream" }, signal: controller.signal });
    assert.equal(stream.status, 200);
    const secondStream = await fetch(`${base}/sse`, { headers: { ...as("few"), accept: "text/event-stream" } });
    assert.equal(secondStream.status, 429, "a second SSE stream is over the limit of 1");
    const ws = await new Promise<number>((resolve) => {
      const socket = new WebSocket(`ws://127.0.0.1:${gateway.port}/ws`, "mcp", { headers: as("few") });
      socket.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
      socket.once("open", () => resolve(101));
      socket.once("error", () => undefined);
    });
    assert.equal(ws, 429, "a WebSocket counts against the same streams");
    controller.abort();
  });

  test("running sandboxes: past the limit the tenant's idle one is suspended, and comes back intact", async () => {
    const a = await connectAs(`${base}/servers/memory/mcp`, keys.tight!);
    await a.callTool({ name: "create_entities", arguments: { entities: [{ name: "kept-by-a", entityType: "note", observations: ["a"] }] } });
    assert.equal((await gateway.router.tenantUsage("tight")).runningSandboxes, 1);
    const b = await connectAs(`${base}/servers/memory/mcp`, keys.tight!);
    await b.callTool({ name: "read_graph", arguments: {} });
    const usage = await gateway.router.tenantUsage("tight");
    assert.equal(usage.runningSandboxes, 1, "a's sandbox was suspended to make room for b's");
    await eventually(async () => (await gateway.router.tenantUsage("tight")).suspendedSessions === 1, "a's session to be saved as suspended");

    // a comes back (b's idle sandbox is suspended in turn), with its data. a runs again, so what it saved
    // is no longer its state: only b counts as saved.
    const graph = (await a.callTool({ name: "read_graph", arguments: {} })) as CallToolResult;
    assert.match(JSON.stringify(graph), /kept-by-a/);
    await eventually(async () => (await gateway.router.tenantUsage("tight")).suspendedSessions === 1 && (await gateway.router.tenantUsage("tight")).runningSandboxes === 1, "b's session to be saved, a's to run");

    // At its limit of saved sessions, a new session evicts the least recently saved one (b's), like a
    // bounded cache: clients that never DELETE must not lock their tenant out.
    const c = await connectAs(`${base}/servers/memory/mcp`, keys.tight!);
    assert.equal((await gateway.router.tenantUsage("tight")).suspendedSessions, 0, "the saved session was at the limit of 1");
    await assert.rejects(b.callTool({ name: "read_graph", arguments: {} }), /404|Session not found/, "the evicted session is gone, plainly");
    await c.callTool({ name: "read_graph", arguments: {} });
    assert.match(JSON.stringify(await a.callTool({ name: "read_graph", arguments: {} })), /kept-by-a/, "a, never evicted, still has its data");
    for (const client of [a, c]) await endSession(client).catch(() => undefined);
    await b.close();
  });
});
