/**
 * Builds the real guest images and boots them in QEMU under TCG, with the host driver's command line.
 * Run: node --import tsx --test sandbox/image/build.test.ts
 * MCPVISOR_IMAGE_TEST_CACHE=DIR reuses a cache directory (kept afterwards); default: a fresh temp dir.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { ServerManifestSchema } from "../../src/config/manifest.js";
import { sandboxUnits, type SandboxUnit } from "../../src/config/sandbox-unit.js";
import { AGENT_PROTOCOL_VERSION } from "../agent/protocol.js";
import {
  buildBaseImage,
  buildServerLayer,
  ensureHostPackages,
  guestKernelArgs,
  type BaseImage,
  type BuildContext,
  type ServerLayer,
} from "./index.js";
import { BootedVm, type BootFiles, type Frame } from "./test-boot.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const keepCache = Boolean(process.env.MCPVISOR_IMAGE_TEST_CACHE);
const cacheDir = process.env.MCPVISOR_IMAGE_TEST_CACHE || fs.mkdtempSync(path.join(os.tmpdir(), "mcpvisor-image-test-"));
const log: string[] = [];
const ctx: BuildContext = { cacheDir, repoRoot, progress: (line) => log.push(line) };

const memoryUnit = soloUnit({
  name: "memory",
  source: { kind: "npm", package: "@modelcontextprotocol/server-memory", version: "2026.8.31" },
  command: "node",
  args: ["node_modules/@modelcontextprotocol/server-memory/dist/index.js"],
  env: { MEMORY_FILE_PATH: "/tmp/memory.jsonl" },
});
// A `bundle` layer: the agent tests' SDK-based fixture, bundled by esbuild with its CJS dependencies.
const echoUnit = soloUnit({
  name: "echo",
  source: { kind: "bundle", entry: "sandbox/agent/test-fixtures/echo-server.mjs" },
  command: "node",
  args: ["server.mjs"],
});

function soloUnit(manifest: unknown): SandboxUnit {
  return sandboxUnits([ServerManifestSchema.parse(manifest)], "servers")[0]!;
}

let base: BaseImage;
let memoryLayer: ServerLayer;
/** tsc_early_khz=…: without it a loaded host makes most TCG boots hang (see tsc.ts). */
let kernelArgs = "";

/** A boot that hangs anyway must not hang the test: every boot gets a deadline and one retry. */
async function withBootRetry<T>(name: string, fn: (vm: BootedVm) => Promise<T>, files: BootFiles, append = ""): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const vm = BootedVm.start(files, [append, kernelArgs].filter(Boolean).join(" "));
    try {
      return await fn(vm);
    } catch (err) {
      if (attempt >= 2) throw err;
      log.push(`${name}: boot attempt ${attempt} failed, retrying: ${(err as Error).message.split("\n")[0]}`);
    } finally {
      await vm.kill();
    }
  }
}

function mcpRequest(vm: BootedVm, server: string, id: number, method: string, params?: object): void {
  vm.send({ t: "mcp", s: server, msg: { jsonrpc: "2.0", id, method, ...(params ? { params } : {}) } });
}

const isAnswer = (id: number) => (f: Frame) => f.t === "mcp" && (f.msg as Frame).id === id;

before(async () => {
  await ensureHostPackages(ctx);
  kernelArgs = (await guestKernelArgs(ctx)).join(" ");
  log.push(`guest kernel args: ${kernelArgs}`);
});

after(() => {
  for (const line of log) console.log(line);
  if (!keepCache) fs.rmSync(cacheDir, { recursive: true, force: true });
});

describe("guest images", () => {
  test("builds the base image and a server layer; an unchanged rebuild is cached and fast", async () => {
    base = await buildBaseImage(ctx);
    memoryLayer = await buildServerLayer(ctx, memoryUnit);
    for (const p of [base.kernelPath, base.initrdPath, base.rootfsPath, memoryLayer.diskPath]) {
      assert.ok(fs.statSync(p).size > 0, `${p} exists`);
      assert.ok(p.startsWith(path.join(cacheDir, "images")), `${p} is in the cache`);
    }
    assert.match(base.kernelRelease, /^\d+\.\d+\.\d+-\d+-cloud-amd64$/);
    assert.ok(path.basename(memoryLayer.diskPath).includes(memoryLayer.hash));

    const started = Date.now();
    const again = await buildBaseImage(ctx);
    const layerAgain = await buildServerLayer(ctx, memoryUnit);
    const warmMs = Date.now() - started;
    log.push(`warm rebuild (base + layer): ${warmMs} ms`);
    assert.deepEqual(again, base);
    assert.deepEqual(layerAgain, memoryLayer);
    assert.ok(warmMs < 2_000, `warm rebuild took ${warmMs} ms`);

    // A layer for a different server gets a different name; nothing is left half-written.
    const echo = await buildServerLayer(ctx, echoUnit);
    assert.notEqual(echo.diskPath, memoryLayer.diskPath);
    const leftovers = fs.readdirSync(path.join(cacheDir, "images")).filter((n) => n.includes(".tmp-"));
    assert.deepEqual(leftovers, []);
  });

  test("boots the memory server: hello, MCP initialize + tools/list, ping", async (t) => {
    assert.ok(base && memoryLayer, "images built");
    const files = { ...base, layerPath: memoryLayer.diskPath };
    await withBootRetry("memory", async (vm) => {
      const deadline = vm.startedAt + 45_000;
      await vm.connect(deadline);
      const hello = await vm.waitFrame((f) => f.t === "hello", vm.startedAt + 30_000);
      assert.equal(hello.frame.v, AGENT_PROTOCOL_VERSION);
      assert.equal(hello.frame.kernel, base.kernelRelease);

      mcpRequest(vm, "memory", 1, "initialize", {
        protocolVersion: "2025-06-18",
        capabilities: {},
        clientInfo: { name: "image-test", version: "1.0.0" },
      });
      const init = await vm.waitFrame(isAnswer(1), deadline);
      const serverInfo = ((init.frame.msg as Frame).result as Frame).serverInfo as Frame;
      assert.equal(serverInfo.name, "memory-server");
      vm.send({ t: "mcp", s: "memory", msg: { jsonrpc: "2.0", method: "notifications/initialized" } });

      mcpRequest(vm, "memory", 2, "tools/list");
      const list = await vm.waitFrame(isAnswer(2), deadline);
      const tools = (((list.frame.msg as Frame).result as Frame).tools as Frame[]).map((x) => x.name);
      assert.ok(tools.includes("create_entities") && tools.includes("read_graph"), `tools: ${tools.join(",")}`);

      vm.send({ t: "ping", id: 42 });
      const pong = await vm.waitFrame((f) => f.t === "pong" && f.id === 42, deadline);
      assert.equal(pong.frame.serverAlive, true);
      assert.ok(!/mcpvisor-init:/.test(vm.serial), `init complained:\n${vm.serial}`);

      const msg = `boot to hello ${hello.at - vm.startedAt} ms, to initialize answered ${init.at - vm.startedAt} ms (TCG)`;
      log.push(`memory: ${msg}`);
      t.diagnostic(msg);
    }, files);
  });

  test("probe boot prints MCPVISOR_PROBE_OK and QEMU exits by itself", async (t) => {
    assert.ok(base, "images built");
    const files: BootFiles = { kernelPath: base.kernelPath, initrdPath: base.initrdPath, rootfsPath: base.rootfsPath };
    await withBootRetry("probe", async (vm) => {
      await vm.waitSerial(/MCPVISOR_PROBE_OK/, vm.startedAt + 30_000);
      const code = await vm.waitExit(Date.now() + 15_000);
      assert.equal(code, 0, `QEMU exit: ${code}\n${vm.serial}`);
      assert.match(vm.serial, /^MCPVISOR_PROBE_OK\r?$/m);
      const msg = `probe boot to QEMU exit ${Date.now() - vm.startedAt} ms`;
      log.push(msg);
      t.diagnostic(msg);
    }, files, "mcpvisor.probe=1");
  });

  test("bundle layer: resume reseeds and sets the clock; server exit powers the guest off", async () => {
    assert.ok(base, "images built");
    const echo = await buildServerLayer(ctx, echoUnit);
    await withBootRetry("echo", async (vm) => {
      const deadline = vm.startedAt + 45_000;
      await vm.connect(deadline);
      await vm.waitFrame((f) => f.t === "hello", vm.startedAt + 30_000);

      // What the host sends after `cont`: its clock (here an hour ahead, to see it move) and a seed.
      const future = Date.now() + 3_600_000;
      const sent = Date.now();
      vm.send({ t: "resume", id: 1, timeMs: future, seed: Buffer.alloc(32, 9).toString("base64") });
      const resumed = await vm.waitFrame((f) => f.t === "resumed", deadline);
      assert.equal(resumed.frame.reseeded, true, JSON.stringify(vm.frames.map((f) => f.frame)));
      assert.ok(Math.abs((resumed.frame.clockMs as number) - future) < 5_000);
      log.push(`echo: resume answered in ${resumed.at - sent} ms (first, right after boot)`);

      mcpRequest(vm, "echo", 1, "initialize", { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "t", version: "1" } });
      await vm.waitFrame(isAnswer(1), deadline);
      mcpRequest(vm, "echo", 2, "tools/call", { name: "echo", arguments: { text: "from the guest" } });
      const echoed = await vm.waitFrame(isAnswer(2), deadline);
      assert.deepEqual(((echoed.frame.msg as Frame).result as Frame).content, [{ type: "text", text: "from the guest" }]);

      mcpRequest(vm, "echo", 3, "tools/call", { name: "crash", arguments: {} });
      const exit = await vm.waitFrame((f) => f.t === "exit", deadline);
      assert.equal(exit.frame.code, 3);
      assert.match(exit.frame.stderrTail as string, /about to crash/);
      assert.equal(await vm.waitExit(Date.now() + 15_000), 0, "QEMU exits after the guest powers off");
    }, { ...base, layerPath: echo.diskPath });
  });
});
