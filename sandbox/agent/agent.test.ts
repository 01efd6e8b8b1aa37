/**
 * The guest agent on the host: bundled exactly as the image bundles it, run with
 * MCPVISOR_AGENT_DEVICE=stdio, bridging a real stdio MCP server (test-fixtures/echo-server.mjs).
 * Run: node --import tsx --test sandbox/agent/agent.test.ts
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { bundleAgent } from "../image/bundle.js";
import { AGENT_PROTOCOL_VERSION, FrameDecoder, MAX_FRAME_BYTES, encodeFrame, type HostFrame } from "./protocol.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const fixture = path.join(here, "test-fixtures", "echo-server.mjs");
const repoRoot = path.resolve(here, "..", "..");
let tmp = "";
let agentBundle = "";

type Frame = Record<string, unknown>;

class Harness {
  readonly child: ChildProcessWithoutNullStreams;
  readonly frames: Frame[] = [];
  private readonly decoder = new FrameDecoder();
  private waiters: (() => void)[] = [];
  readonly exited: Promise<number | null>;

  /** `spec`: one server's (named "echo"), or a whole guest spec with `servers`. */
  constructor(spec: object, env: Record<string, string> = {}) {
    if (!("servers" in spec)) spec = { servers: [{ name: "echo", ...spec }] };
    const specPath = path.join(tmp, `spec-${Math.random().toString(36).slice(2)}.json`);
    fs.writeFileSync(specPath, JSON.stringify(spec));
    this.child = spawn(process.execPath, [agentBundle], {
      env: { ...process.env, MCPVISOR_AGENT_DEVICE: "stdio", MCPVISOR_SERVER_SPEC: specPath, ...env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.child.stderr.on("data", () => {});
    this.child.stdout.on("data", (chunk: Buffer) => {
      for (const f of this.decoder.push(chunk)) this.frames.push(f as Frame);
      for (const w of this.waiters.splice(0)) w();
    });
    this.exited = new Promise((resolve) => this.child.on("exit", (code) => resolve(code)));
  }

  send(frame: HostFrame | string): void {
    this.child.stdin.write(typeof frame === "string" ? frame : encodeFrame(frame));
  }

  /** Resolves with the first frame (from index `from` on) matching `pred`. */
  async waitFor(pred: (f: Frame) => boolean, timeoutMs = 10_000, from = 0): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.frames.slice(from).find(pred);
      if (found) return found;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; frames so far: ${JSON.stringify(this.frames).slice(0, 2000)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async request(id: number, method: string, params?: object, server = "echo"): Promise<Frame> {
    this.send({ t: "mcp", s: server, msg: { jsonrpc: "2.0", id, method, ...(params ? { params } : {}) } });
    const frame = await this.waitFor((f) => f.t === "mcp" && f.s === server && (f.msg as Frame).id === id);
    return frame.msg as Frame;
  }

  async initialize(server = "echo"): Promise<Frame> {
    const res = await this.request(1, "initialize", {
      protocolVersion: "2025-06-18",
      capabilities: {},
      clientInfo: { name: "agent-test", version: "1.0.0" },
    }, server);
    this.send({ t: "mcp", s: server, msg: { jsonrpc: "2.0", method: "notifications/initialized" } });
    return res;
  }

  kill(): void {
    this.child.kill("SIGKILL");
  }
}

const echoSpec = () => ({ command: "node", args: [fixture], env: { FIXTURE: "1" }, cwd: repoRoot });

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mcpvisor-agent-test-"));
  agentBundle = path.join(tmp, "agent.mjs");
  fs.writeFileSync(agentBundle, await bundleAgent(repoRoot));
});

after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe("guest agent (stdio mode)", () => {
  test("hello, MCP initialize + tools/list + tools/call, ping/pong", async () => {
    const h = new Harness(echoSpec());
    try {
      const hello = await h.waitFor((f) => f.t === "hello");
      assert.equal(hello.v, AGENT_PROTOCOL_VERSION);
      assert.equal(hello.kernel, os.release());
      assert.equal(typeof (hello.servers as Record<string, number>).echo, "number");
      assert.ok((hello.uptimeMs as number) > 0);

      const init = await h.initialize();
      assert.equal((init.result as Frame & { serverInfo: Frame }).serverInfo.name, "echo-fixture");
      const list = await h.request(2, "tools/list");
      const names = ((list.result as Frame).tools as Frame[]).map((t) => t.name);
      assert.deepEqual(names.sort(), ["crash", "echo", "garbage"]);
      const call = await h.request(3, "tools/call", { name: "echo", arguments: { text: "héllo" } });
      assert.deepEqual((call.result as Frame).content, [{ type: "text", text: "héllo" }]);

      h.send({ t: "ping", id: 7 });
      const pong = await h.waitFor((f) => f.t === "pong");
      assert.equal(pong.id, 7);
      assert.equal(pong.serverAlive, true);
      assert.match(pong.stderrTail as string, /fixture: started/);
    } finally {
      h.kill();
    }
  });

  test("bad frames are reported, never fatal; unknown types are ignored", async () => {
    const h = new Harness(echoSpec());
    try {
      await h.waitFor((f) => f.t === "hello");
      h.send("this is not json\n");
      await h.waitFor((f) => f.t === "error" && /unparsable/.test(f.message as string));
      h.send('{"t":"mcp"}\n');
      await h.waitFor((f) => f.t === "error" && /msg/.test(f.message as string));
      h.send("[1,2,3]\n");
      await h.waitFor((f) => f.t === "error" && /not a JSON object/.test(f.message as string));
      h.send('{"t":"ping"}\n');
      await h.waitFor((f) => f.t === "error" && /ping/.test(f.message as string));
      const errorsBefore = h.frames.filter((f) => f.t === "error").length;
      h.send('{"t":"from-the-future","x":1}\n');
      h.send({ t: "ping", id: 1 });
      await h.waitFor((f) => f.t === "pong" && f.id === 1);
      assert.equal(h.frames.filter((f) => f.t === "error").length, errorsBefore, "unknown t must be ignored");

      // A frame over the limit is dropped up to its newline; the channel keeps working.
      const from = h.frames.length;
      h.send("x".repeat(MAX_FRAME_BYTES + 10) + "\n");
      h.send({ t: "ping", id: 2 });
      await h.waitFor((f) => f.t === "error" && /larger than/.test(f.message as string), 20_000, from);
      await h.waitFor((f) => f.t === "pong" && f.id === 2, 20_000, from);

      // The server printing a non-JSON line to stdout: an error frame, and the real answer still comes.
      await h.initialize();
      const res = await h.request(5, "tools/call", { name: "garbage", arguments: {} });
      assert.deepEqual((res.result as Frame).content, [{ type: "text", text: "wrote garbage" }]);
      await h.waitFor((f) => f.t === "error" && /this is not json/.test(f.message as string));
    } finally {
      h.kill();
    }
  });

  test("several servers in one guest: frames are routed by server, ids of each are their own, one exit ends all", async () => {
    const h = new Harness({ servers: [{ name: "a", ...echoSpec() }, { name: "b", ...echoSpec() }] });
    try {
      const hello = await h.waitFor((f) => f.t === "hello");
      const pids = hello.servers as Record<string, number>;
      assert.deepEqual(Object.keys(pids).sort(), ["a", "b"]);
      assert.notEqual(pids.a, pids.b);
      await h.initialize("a");
      await h.initialize("b");
      // The same id to both: each answer comes back tagged with the server that gave it.
      const [fromA, fromB] = await Promise.all([
        h.request(5, "tools/call", { name: "echo", arguments: { text: "to a" } }, "a"),
        h.request(5, "tools/call", { name: "echo", arguments: { text: "to b" } }, "b"),
      ]);
      assert.deepEqual((fromA.result as Frame).content, [{ type: "text", text: "to a" }]);
      assert.deepEqual((fromB.result as Frame).content, [{ type: "text", text: "to b" }]);

      h.send({ t: "mcp", s: "nobody", msg: { jsonrpc: "2.0", id: 6, method: "tools/list" } });
      await h.waitFor((f) => f.t === "error" && /"nobody", which this guest does not host/.test(f.message as string));

      h.send({ t: "mcp", s: "b", msg: { jsonrpc: "2.0", id: 7, method: "tools/call", params: { name: "crash", arguments: {} } } });
      const exit = await h.waitFor((f) => f.t === "exit");
      assert.equal(exit.server, "b");
      assert.equal(exit.code, 3);
      assert.equal(await h.exited, 0, "the agent ends with its servers");
    } finally {
      h.kill();
    }
  });

  test("server exit: exit frame with code and stderr tail, then the agent ends", async () => {
    const h = new Harness(echoSpec());
    await h.waitFor((f) => f.t === "hello");
    await h.initialize();
    h.send({ t: "mcp", s: "echo", msg: { jsonrpc: "2.0", id: 9, method: "tools/call", params: { name: "crash", arguments: {} } } });
    const exit = await h.waitFor((f) => f.t === "exit");
    assert.equal(exit.code, 3);
    assert.equal(exit.signal, null);
    assert.match(exit.stderrTail as string, /fixture: about to crash/);
    assert.ok(h.frames.some((f) => f.t === "mcp" && (f.msg as Frame).id === 9), "answer before exit is forwarded");
    assert.equal(await h.exited, 0);
  });

  test("stderr tail is bounded to STDERR_TAIL_BYTES", async () => {
    const script = "process.stderr.write('a'.repeat(100000) + 'THE-END'); setTimeout(() => process.exit(0), 50)";
    const h = new Harness({ command: "node", args: ["-e", script], env: {}, cwd: tmp });
    const exit = await h.waitFor((f) => f.t === "exit");
    const tail = exit.stderrTail as string;
    assert.ok(tail.length <= 8 * 1024, `tail is ${tail.length} bytes`);
    assert.ok(tail.endsWith("THE-END"));
    await h.exited;
  });

  test("a server that cannot be spawned is reported as exit", async () => {
    const h = new Harness({ command: "/nonexistent/server", args: [], env: {}, cwd: tmp });
    const exit = await h.waitFor((f) => f.t === "exit");
    assert.equal(exit.code, null);
    assert.match(exit.stderrTail as string, /ENOENT/);
    assert.ok(!h.frames.some((f) => f.t === "hello"));
    await h.exited;
  });

  test("resume goes through the persistent helper (--serve) with the clock and the seed", async () => {
    const log = path.join(tmp, "serve.log");
    const fake = path.join(tmp, "fake-serve-helper.sh");
    // Stands in for resume-helper.c's --serve mode: one "<ms> <seed hex>" line in, "ok" out.
    fs.writeFileSync(
      fake,
      `#!/bin/sh\n[ "$1" = --serve ] || exit 9\nwhile read -r ms seed; do echo "$ms $seed" >> ${log}; echo ok; done\n`,
      { mode: 0o755 },
    );
    const h = new Harness(echoSpec(), { MCPVISOR_RESUME_HELPER: fake });
    try {
      await h.waitFor((f) => f.t === "hello");
      for (const id of [4, 5]) {
        const seed = Buffer.from(Array.from({ length: 32 }, (_, i) => i * id));
        const now = Date.now();
        h.send({ t: "resume", id, timeMs: now, seed: seed.toString("base64") });
        const resumed = await h.waitFor((f) => f.t === "resumed" && f.id === id);
        assert.equal(resumed.reseeded, true);
        assert.ok(Math.abs((resumed.clockMs as number) - now) < 5_000);
        const last = fs.readFileSync(log, "utf8").trim().split("\n").at(-1);
        assert.equal(last, `${now} ${seed.toString("hex")}`);
      }
      assert.ok(!h.frames.some((f) => f.t === "error"));
    } finally {
      h.kill();
    }
  });

  test("resume falls back to the one-shot helper when --serve is unavailable", async () => {
    const seedOut = path.join(tmp, "seed.bin");
    const fake = path.join(tmp, "fake-oneshot-helper.sh");
    fs.writeFileSync(
      fake,
      `#!/bin/sh\n[ "$1" = --serve ] && exit 2\necho "$1" > ${seedOut}.arg\ncat > ${seedOut}\n`,
      { mode: 0o755 },
    );
    const h = new Harness(echoSpec(), { MCPVISOR_RESUME_HELPER: fake });
    try {
      await h.waitFor((f) => f.t === "hello");
      await new Promise((r) => setTimeout(r, 200)); // let the --serve attempt die first
      const seed = Buffer.from(Array.from({ length: 32 }, (_, i) => i * 7));
      const now = Date.now();
      h.send({ t: "resume", id: 6, timeMs: now, seed: seed.toString("base64") });
      const resumed = await h.waitFor((f) => f.t === "resumed");
      assert.equal(resumed.reseeded, true);
      assert.deepEqual(fs.readFileSync(seedOut), seed);
      assert.equal(fs.readFileSync(`${seedOut}.arg`, "utf8").trim(), String(now));
    } finally {
      h.kill();
    }
  });

  test("a failing resume helper gives reseeded=false and an error frame", async () => {
    const h = new Harness(echoSpec(), { MCPVISOR_RESUME_HELPER: path.join(tmp, "missing-helper") });
    try {
      await h.waitFor((f) => f.t === "hello");
      h.send({ t: "resume", id: 5, timeMs: Date.now(), seed: Buffer.alloc(32, 1).toString("base64") });
      const resumed = await h.waitFor((f) => f.t === "resumed");
      assert.equal(resumed.reseeded, false);
      await h.waitFor((f) => f.t === "error" && /resume helper/.test(f.message as string));
    } finally {
      h.kill();
    }
  });
});
