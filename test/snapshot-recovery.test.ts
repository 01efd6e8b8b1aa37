import assert from "node:assert/strict";
import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, test } from "node:test";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { startGateway } from "../src/main.js";
import { createLogger } from "../src/telemetry/log.js";
import { connect, copyCache, eventually, runningVmms, serversDirWith, sh, startReadyGateway, testConfig } from "./helpers.js";

// Each case damages a private copy of the cache, so the shared templates stay intact.
const copies: string[] = [];
after(async () => {
  await Promise.all(copies.map((dir) => rm(dir, { recursive: true, force: true })));
});

async function damagedCache(damage: (templateDir: string) => Promise<void>): Promise<{ cacheDir: string; oldKey: string }> {
  const cacheDir = await copyCache(testConfig().cacheDir);
  copies.push(cacheDir);
  const root = join(cacheDir, "templates", "memory");
  const [key] = (await readdir(root)).filter((d) => !d.includes(".build-"));
  assert.ok(key, "the shared cache has a memory template");
  await damage(join(root, key));
  return { cacheDir, oldKey: key };
}

async function callsWork(cacheDir: string): Promise<string> {
  const gateway = await startReadyGateway({ servers: ["memory"], cacheDir });
  try {
    const client = await connect(gateway.url("memory"));
    const graph = (await client.callTool({ name: "read_graph", arguments: {} })) as CallToolResult;
    assert.notEqual(graph.isError, true, "calls work");
    await client.close();
    const meta = JSON.parse(await readFile(join(cacheDir, "templates", "memory", (await gateway.pool.template("memory")).key, "meta.json"), "utf8"));
    return meta.createdAt as string;
  } finally {
    await gateway.close();
  }
}

test("a corrupt device state is detected, the template rebuilt, and calls work", { timeout: 180_000 }, async () => {
  let createdBefore = "";
  const { cacheDir } = await damagedCache(async (dir) => {
    createdBefore = JSON.parse(await readFile(join(dir, "meta.json"), "utf8")).createdAt;
    const state = await readFile(join(dir, "state"));
    const at = state.length >> 1;
    state[at] = state[at]! ^ 0xff;
    await writeFile(join(dir, "state"), state);
  });
  const createdAfter = await callsWork(cacheDir);
  assert.notEqual(createdAfter, createdBefore, "the damaged template must be rebuilt, not trusted");
});

test("a missing RAM file is detected, the template rebuilt, and calls work", { timeout: 180_000 }, async () => {
  let createdBefore = "";
  const { cacheDir } = await damagedCache(async (dir) => {
    createdBefore = JSON.parse(await readFile(join(dir, "meta.json"), "utf8")).createdAt;
    await rm(join(dir, "ram"));
  });
  assert.notEqual(await callsWork(cacheDir), createdBefore);
});

test("a call past the manifest's time limit gets a timeout error, and the session's next call works", { timeout: 120_000 }, async () => {
  const serversDir = await serversDirWith({ exec: (m) => ({ timeouts: { ...m.timeouts, callMs: 1500 } }) });
  const gateway = await startReadyGateway({ servers: ["exec"], serversDir });
  try {
    const client = await connect(gateway.url("exec"));
    const started = Date.now();
    const slow = client.callTool({ name: "run", arguments: { command: "sleep 30", timeoutMs: 60_000 } }) as Promise<CallToolResult>;
    await assert.rejects(slow, (err: Error & { code?: number }) => {
      assert.equal(err.code, -32001);
      assert.match(err.message, /took longer than 1500 ms/);
      return true;
    });
    assert.ok(Date.now() - started < 10_000, "the client is told promptly, not left hanging");
    assert.equal((await sh(client, "echo next")).stdout.trim(), "next");
    await client.close();
  } finally {
    await gateway.close();
  }
});

test("a pooled clone whose warm-up fails is ended, not left running", { timeout: 120_000 }, async () => {
  // With a 1 ms call limit no warm-up request of a fresh clone is answered in time: every clone the pool
  // resumes for its warm list fails its warm-up (the template, built under bootMs, is not affected).
  const serversDir = await serversDirWith({ exec: (m) => ({ timeouts: { ...m.timeouts, callMs: 1 }, pool: { prestarted: 0, warm: 1 } }) });
  const config = testConfig({ servers: ["exec"], serversDir });
  const gateway = await startGateway(config, createLogger(config.logLevel), () => undefined);
  try {
    await gateway.settled;
    const stats = gateway.pool.stats().find((s) => s.members.includes("exec"))!;
    assert.equal(stats.warm, 0, "no clone passed its warm-up");
    const held = stats.prestarted + stats.warm + stats.leased;
    await eventually(() => runningVmms().length === held, `only the ${held} VMs the pool holds run (running: ${runningVmms().length})`);
  } finally {
    await gateway.close();
  }
  assert.deepEqual(runningVmms(), [], "no VM outlives the gateway");
});
