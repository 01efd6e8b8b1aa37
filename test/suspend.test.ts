import assert from "node:assert/strict";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { connect, serversDirWith, sh, startReadyGateway, testConfig } from "./helpers.js";

const until = async (what: () => boolean, ms = 15_000) => {
  const deadline = Date.now() + ms;
  while (!what()) {
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 50));
  }
};

test("an idle session is suspended to disk (no VM left) and resumed transparently with its state intact", { timeout: 180_000 }, async () => {
  const serversDir = await serversDirWith({
    memory: (m) => ({ timeouts: { ...m.timeouts, idleSuspendMs: 1_000 } }),
    exec: (m) => ({ timeouts: { ...m.timeouts, idleSuspendMs: 1_000 } }),
  });
  const gateway = await startReadyGateway({ servers: ["memory", "exec"], serversDir }, { pool: { prestarted: 1, warm: 0 } });
  const stats = (server: string) => gateway.pool.stats().find((s) => s.server === server)!;
  try {
    const memory = await connect(gateway.url("memory"));
    const exec = await connect(gateway.url("exec"));
    await memory.callTool({ name: "create_entities", arguments: { entities: [{ name: "kept", entityType: "t", observations: ["across suspend"] }] } });
    // The pause lets setsid take the loop out of the command's process group, which exec kills on exit.
    await sh(exec, "echo on-disk > /tmp/f; setsid sh -c 'while true; do sleep 1; done' </dev/null >/dev/null 2>&1 & echo $! > /tmp/pid; sleep 0.3");
    await until(() => stats("memory").suspended === 1 && stats("exec").suspended === 1);
    for (const server of ["memory", "exec"]) {
      const [sandbox] = stats(server).sandboxes;
      assert.equal(sandbox!.pid, undefined, "a suspended sandbox has no VM process");
      const file = join(testConfig().cacheDir, "suspended", server, `${sandbox!.id}.mig.gz`);
      const { size } = await stat(file);
      assert.ok(size < 10 * 1024 * 1024, `${server}: suspended state is ${size} bytes, expected under 10 MiB`);
    }
    const graph = (await memory.callTool({ name: "read_graph", arguments: {} })) as CallToolResult;
    assert.deepEqual((graph.structuredContent as { entities: { name: string }[] }).entities.map((e) => e.name), ["kept"]);
    const after = await sh(exec, "cat /tmp/f; kill -0 $(cat /tmp/pid) && echo process-alive");
    assert.equal(after.stdout, "on-disk\nprocess-alive\n", "files and running processes survive the suspend");
    assert.equal(stats("memory").suspended, 0);
    await Promise.all([memory.close(), exec.close()]);
  } finally {
    await gateway.close();
  }
});
