import assert from "node:assert/strict";
import { test } from "node:test";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import type { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError, type CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { connect, eventually, serversDirWith, sh, startReadyGateway } from "./helpers.js";

test("a VM cap holds: past it requests wait in a bounded queue, then get a clear busy error", { timeout: 120_000 }, async () => {
  const gateway = await startReadyGateway(
    { servers: ["exec"], maxVms: 2, vmQueue: 1, vmQueueTimeoutMs: 20_000 },
    { pool: { prestarted: 0, warm: 0 } },
  );
  try {
    const [a, b, c, d] = await Promise.all([0, 1, 2, 3].map(() => connect(gateway.url("exec"))));
    // Two sessions with calls in flight hold both VMs (an idle one would be suspended to make room). Each
    // call runs until the test creates /tmp/go in its VM, with a second call to the same session.
    const held = (client: Client, name: string) => sh(client, `until [ -e /tmp/go ]; do sleep 0.1; done; echo ${name}-done`, 60_000);
    const busyA = held(a!, "a");
    const busyB = held(b!, "b");
    const active = () => gateway.pool.stats()[0]!.sandboxes.filter((s) => s.state === "active").length;
    await eventually(() => active() === 2, "both calls to run in their VMs", 60_000);
    assert.deepEqual(gateway.pool.budgetStats(), { inUse: 2, queued: 0 });
    const waiting = sh(c!, "echo got-a-vm");
    await eventually(() => gateway.pool.budgetStats().queued === 1, "the third session's call to wait in the queue");
    await assert.rejects(d!.callTool({ name: "run", arguments: { command: "true" } }), (err: unknown) => {
      assert.ok(err instanceof McpError);
      assert.match(err.message, /busy: all 2 VMs this gateway may run are in use and the wait queue is full; retry shortly/);
      assert.equal((err.data as { retryable: boolean }).retryable, true);
      return true;
    });
    assert.equal(gateway.pool.budgetStats().queued, 1, "the queued call still waits");
    await sh(a!, "touch /tmp/go");
    assert.equal((await busyA).stdout, "a-done\n");
    await (a!.transport as StreamableHTTPClientTransport).terminateSession();
    assert.equal((await waiting).stdout, "got-a-vm\n", "the queued request runs once a VM is freed");
    await sh(b!, "touch /tmp/go");
    await busyB;
    assert.equal(gateway.pool.budgetStats().inUse, 2);
    await Promise.all([a, b, c, d].map((client) => client!.close()));
  } finally {
    await gateway.close();
  }
});

test("no guest has a network: a connection attempt from exec fails inside the VM", { timeout: 60_000 }, async () => {
  const gateway = await startReadyGateway({ servers: ["exec"] });
  try {
    const client = await connect(gateway.url("exec"));
    // 192.0.2.1 is TEST-NET-1 (documentation only): nothing would answer even if a packet could leave.
    const result = (await client.callTool({
      name: "run_js",
      arguments: { code: "try { await fetch('http://192.0.2.1/'); console.log('reached'); } catch (e) { console.log(e.cause?.code ?? e.message); }" },
    })) as CallToolResult;
    const out = (result.structuredContent as { stdout: string }).stdout.trim();
    assert.match(out, /ENETUNREACH|EHOSTUNREACH/, `got: ${out}`);
    await client.close();
  } finally {
    await gateway.close();
  }
});

test("at the VM cap, the least recently used idle session is suspended early to make room, and loses nothing", { timeout: 120_000 }, async () => {
  const serversDir = await serversDirWith({ exec: (m) => ({ timeouts: { ...m.timeouts, idleSuspendMs: 600_000 } }) });
  const gateway = await startReadyGateway(
    { servers: ["exec"], serversDir, maxVms: 1, vmQueue: 2, vmQueueTimeoutMs: 20_000 },
    { pool: { prestarted: 0, warm: 0 } },
  );
  try {
    const a = await connect(gateway.url("exec"));
    const b = await connect(gateway.url("exec"));
    await sh(a, "echo a-state > /tmp/a");
    assert.equal((await sh(b, "echo b-ran")).stdout, "b-ran\n", "b gets a VM: a's was suspended to make room");
    assert.equal(gateway.pool.stats()[0]!.suspended, 1);
    assert.equal((await sh(a, "cat /tmp/a")).stdout, "a-state\n", "a comes back with its state (b's VM is suspended in turn)");
    await Promise.all([a.close(), b.close()]);
  } finally {
    await gateway.close();
  }
});
