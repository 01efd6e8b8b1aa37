import assert from "node:assert/strict";
import { test } from "node:test";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { connect, eventually, serversDirWith, sh, startReadyGateway } from "./helpers.js";

test("isolation 'call': every call gets a fresh clone, so nothing one call writes is seen by the next", { timeout: 120_000 }, async () => {
  // Out of the workspace: a server sharing a sandbox must keep session isolation.
  const serversDir = await serversDirWith({ exec: () => ({ isolation: "call", sandbox: undefined }) });
  const gateway = await startReadyGateway({ servers: ["exec"], serversDir });
  try {
    const client = await connect(gateway.url("exec"));
    assert.equal((await sh(client, "echo kept > /tmp/f && cat /tmp/f")).stdout, "kept\n");
    const next = await sh(client, "cat /tmp/f || echo absent");
    assert.equal(next.stdout.trim(), "absent");
    await eventually(() => gateway.pool.stats()[0]!.leased === 0, "a call's clone is destroyed once it answered");
    await client.close();
  } finally {
    await gateway.close();
  }
});

test("isolation 'session' (default) keeps the clone across calls", { timeout: 60_000 }, async () => {
  const gateway = await startReadyGateway({ servers: ["exec"] });
  try {
    const client = await connect(gateway.url("exec"));
    await sh(client, "echo kept > /tmp/f");
    assert.equal((await sh(client, "cat /tmp/f")).stdout, "kept\n");
    await client.close();
  } finally {
    await gateway.close();
  }
});

test("a stateless request (no session) is answered in its own clone, destroyed after", { timeout: 60_000 }, async () => {
  const gateway = await startReadyGateway({ servers: ["exec"] });
  try {
    const call = async (command: string) => {
      const response = await fetch(gateway.url("exec"), {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 7, method: "tools/call", params: { name: "run", arguments: { command } } }),
      });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("mcp-session-id"), null);
      const body = (await response.json()) as { id: number; result: CallToolResult };
      assert.equal(body.id, 7);
      return (body.result.structuredContent as { stdout: string }).stdout;
    };
    assert.equal(await call("echo x > /tmp/g; cat /tmp/g"), "x\n");
    assert.equal((await call("cat /tmp/g || echo absent")).trim(), "absent");
  } finally {
    await gateway.close();
  }
});
