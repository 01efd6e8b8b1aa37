import assert from "node:assert/strict";
import { test } from "node:test";
import type { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError, type CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { connect, sh, startReadyGateway } from "./helpers.js";

test("a VM cap holds: past it requests wait in a bounded queue, then get a clear busy error", { timeout: 120_000 }, async () => {
  const gateway = await startReadyGateway(
    { servers: ["exec"], maxVms: 2, vmQueue: 1, vmQueueTimeoutMs: 20_000 },
    { pool: { prestarted: 0, warm: 0 } },
  );
  try {
    const [a, b, c, d] = await Promise.all([0, 1, 2, 3].map(() => connect(gateway.url("exec"))));
    await sh(a!, "true");
    await sh(b!, "true");
    assert.deepEqual(gateway.pool.budgetStats(), { inUse: 2, queued: 0 });
    const waiting = sh(c!, "echo got-a-vm");
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(gateway.pool.budgetStats().queued, 1);
    await assert.rejects(d!.callTool({ name: "run", arguments: { command: "true" } }), (err: unknown) => {
      assert.ok(err instanceof McpError);
      assert.match(err.message, /busy: all 2 VMs this gateway may run are in use and the wait queue is full; retry shortly/);
      assert.equal((err.data as { retryable: boolean }).retryable, true);
      return true;
    });
    await (a!.transport as StreamableHTTPClientTransport).terminateSession();
    assert.equal((await waiting).stdout, "got-a-vm\n", "the queued request runs once a VM is freed");
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
