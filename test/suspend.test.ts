import assert from "node:assert/strict";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { RawMcpClient } from "../bench/raw-mcp-client.js";
import type { StoredSession } from "../src/router/session-store.js";
import { events, type SandboxTransitionRecord } from "../src/telemetry/events.js";
import { connect, eventually, nextEvent, runningVmms, serversDirWith, sh, startReadyGateway, testConfig } from "./helpers.js";

test("an idle session is suspended to disk (no VM left) and resumed transparently with its state intact", { timeout: 180_000 }, async () => {
  const serversDir = await serversDirWith({
    memory: (m) => ({ timeouts: { ...m.timeouts, idleSuspendMs: 1_000 } }),
    exec: (m) => ({ timeouts: { ...m.timeouts, idleSuspendMs: 1_000 } }),
  });
  const gateway = await startReadyGateway({ servers: ["memory", "exec"], serversDir }, { pool: { prestarted: 1, warm: 0 } });
  const stats = (server: string) => gateway.pool.stats().find((s) => s.members.includes(server))!;
  try {
    const memory = await connect(gateway.url("memory"));
    const exec = await connect(gateway.url("exec"));
    await memory.callTool({ name: "create_entities", arguments: { entities: [{ name: "kept", entityType: "t", observations: ["across suspend"] }] } });
    // The pause lets setsid take the loop out of the command's process group, which exec kills on exit.
    await sh(exec, "echo on-disk > /tmp/f; setsid sh -c 'while true; do sleep 1; done' </dev/null >/dev/null 2>&1 & echo $! > /tmp/pid; sleep 0.3");
    await eventually(() => stats("memory").suspended === 1 && stats("exec").suspended === 1, "both sessions' sandboxes to be suspended", 15_000);
    for (const server of ["memory", "exec"]) {
      const [sandbox] = stats(server).sandboxes;
      assert.equal(sandbox!.pid, undefined, "a suspended sandbox has no VM process");
      const file = join(testConfig().cacheDir, "suspended", stats(server).server, `${sandbox!.id}.mig.gz`);
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

test("a session ended while its sandbox resumes from disk leaves no VM running, and its call is answered", { timeout: 120_000 }, async () => {
  const serversDir = await serversDirWith({ memory: (m) => ({ timeouts: { ...m.timeouts, idleSuspendMs: 500 } }) });
  const gateway = await startReadyGateway({ servers: ["memory"], serversDir }, { pool: { prestarted: 1, warm: 0 } });
  const stats = () => gateway.pool.stats().find((s) => s.server === "memory")!;
  try {
    const client = new RawMcpClient(gateway.url("memory"));
    await client.initialize();
    await client.request("tools/call", { name: "read_graph", arguments: {} });
    await eventually(() => stats().suspended === 1, "the session's sandbox to be suspended", 15_000);
    // The call resumes the sandbox from disk (~100 ms here); the DELETE goes out as soon as that starts.
    const resuming = nextEvent<SandboxTransitionRecord>(events.sandboxTransition, "the sandbox to start resuming", (t) => t.server === "memory" && t.from === "suspended" && t.to === "resuming");
    const call = client.request("tools/call", { name: "read_graph", arguments: {} }).then(() => undefined, (err: Error) => err);
    await resuming;
    await client.close();
    assert.match((await call)?.message ?? "answered", /session closed|Session not found/, "the call in flight is told the session ended");
    await eventually(() => stats().leased === 0 && runningVmms().length === stats().prestarted, "only the pool's prestarted VMM runs", 10_000);
  } finally {
    await gateway.close();
  }
  assert.deepEqual(runningVmms(), [], "no VM outlives the gateway");
});

test("a saved session comes back only over the very template bytes it was saved against, not another build under the same key", { timeout: 180_000 }, async () => {
  const serversDir = await serversDirWith({ memory: (m) => ({ timeouts: { ...m.timeouts, idleSuspendMs: 500 } }) });
  const config = { servers: ["memory"], serversDir };
  const recordOf = (client: RawMcpClient) => join(testConfig().cacheDir, "sessions", `${client.sessionId}.json`);
  const names = async (client: RawMcpClient) => {
    const result = (await client.request("tools/call", { name: "read_graph", arguments: {} })) as { structuredContent?: { entities: { name: string }[] } };
    return (result.structuredContent?.entities ?? []).map((e) => e.name).filter((n) => n !== "warm-up");
  };
  let gateway = await startReadyGateway(config, { pool: { prestarted: 1, warm: 0 } });
  const kept = new RawMcpClient(gateway.url("memory"));
  const other = new RawMcpClient(gateway.url("memory"));
  try {
    for (const [client, name] of [[kept, "kept"], [other, "other"]] as const) {
      await client.initialize();
      await client.request("tools/call", { name: "create_entities", arguments: { entities: [{ name, entityType: "t", observations: ["x"] }] } });
    }
    const saved = (client: RawMcpClient) => readFile(recordOf(client)).then(() => true, () => false);
    await eventually(async () => (await saved(kept)) && (await saved(other)), "both sessions to be suspended and saved", 15_000);
  } finally {
    await gateway.close();
  }
  // One record now names the same template key with other bytes: what a rebuild under that key (a refilled
  // store, another node's build) would give. Its diff must not be loaded over this template.
  const record = JSON.parse(await readFile(recordOf(other), "utf8")) as StoredSession;
  const id = record.sandboxes.memory!.templateKey;
  record.sandboxes.memory!.templateKey = `${id.slice(0, id.lastIndexOf("-"))}-${"0".repeat(16)}`;
  await writeFile(recordOf(other), JSON.stringify(record));

  gateway = await startReadyGateway(config, { pool: { prestarted: 1, warm: 0 } });
  try {
    kept.url = other.url = gateway.url("memory");
    assert.deepEqual(await names(kept), ["kept"], "the untouched record is revived with its state");
    await assert.rejects(names(other), /HTTP 404/, "the record naming other bytes is not");
    await kept.close();
  } finally {
    await gateway.close();
  }
});
