/**
 * bench/gateway: what a gateway adds to one `tools/call`, for mcpvisor and for a peer gateway
 * (supergateway, from npm), in one run, on the same server (server-memory) and the same call (read_graph).
 *
 *   mcpvisor overhead      = end to end through /mcp (HTTP, gateway, sandbox channel, guest)
 *                            - the same call sent straight down the same clone's sandbox channel
 *   supergateway overhead  = end to end through supergateway's Streamable HTTP (wrapping server-memory as
 *                            a local stdio process) - the same call sent straight to such a process's stdin
 *
 * For scale, a reference path: a minimal node:http proxy in the gateway's process that sends each call down
 * the same clone's channel and answers with the reply (no MCP session, no checks, no telemetry). What it
 * adds is the floor of any node gateway on this host; mcpvisor's overhead is compared with it too.
 *
 * The two servers do not run alike (mcpvisor's runs in a TCG guest with --jitless node; supergateway's is a
 * host process with a JIT), so only the overheads are comparable, never the absolute latencies.
 *
 * Latency: every round sends one call down each path, in a shuffled order, so drift on a noisy machine hits
 * every series alike. The HTTP client runs in a child process (bench/gateway-load.ts) so its CPU work is not
 * on the gateway's event loop; it is a minimal keep-alive client (no schema work). The SDK Client is measured
 * too, as extra rows, in a second phase of rounds with its own direct calls. Throughput: N clients, each its own session (for mcpvisor its own clone),
 * calling in a loop; calls completed in a fixed window after a warm-up.
 *
 * Usage: npm run bench:gateway [-- --calls 1000 --warmup 100 --window 5 --load-warmup 1 --clients 1,8,32 --sdk on|off]
 */
import { freePort } from "../test/services/free-port.js";
import { fork, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { subscribe } from "node:diagnostics_channel";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer as createHttpServer, type Server } from "node:http";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import type { JsonRpcMessage } from "../sandbox/agent/protocol.js";
import { REPO_ROOT, startGateway, type Gateway } from "../src/main.js";
import type { GuestChannel } from "../src/sandbox/driver.js";
import type { Sandbox } from "../src/sandbox/sandbox.js";
import { ServerPool } from "../src/sandbox/server-pool.js";
import { createLogger } from "../src/telemetry/log.js";
import { serversDirWith, testConfig } from "../test/helpers.js";
import type { LoadCommand, LoadResult } from "./gateway-load.js";
import { fmtMs, percentile, table } from "./stats.js";
import { StdioMcpProcess } from "./stdio-mcp.js";

const { values } = parseArgs({
  options: {
    calls: { type: "string", default: "1000" },
    warmup: { type: "string", default: "100" },
    window: { type: "string", default: "5" },
    /** Seconds of calls before the throughput window: each new clone's first calls run code TCG has not translated yet. */
    "load-warmup": { type: "string", default: "1" },
    clients: { type: "string", default: "1,8,32" },
    sdk: { type: "string", default: "on" },
  },
});
const CALLS = Number(values.calls);
const WARMUP = Number(values.warmup);
const WINDOW_MS = Number(values.window) * 1000;
const LOAD_WARMUP_MS = Number(values["load-warmup"]) * 1000;
const CONCURRENCY = values.clients.split(",").map(Number);
/** Also measure the official SDK Client end to end (an extra row per gateway), in a latency phase of its own. */
const SDK = values.sdk !== "off";
const SERVER = "memory";
const TOOL = "read_graph";
const ARGS = {};
const MEMORY_SERVER = join(REPO_ROOT, "node_modules", "@modelcontextprotocol", "server-memory", "dist", "index.js");
const SUPERGATEWAY = join(REPO_ROOT, "node_modules", "supergateway", "dist", "index.js");
const progress = (line: string) => process.stderr.write(`[bench] ${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- cleanup, even on error or ^C --------------------------------------------------------------------
const cleanups: Array<() => Promise<unknown>> = [];
async function cleanup(): Promise<void> {
  for (const step of cleanups.splice(0).reverse()) await step().catch((err: Error) => progress(`cleanup: ${err.message}`));
}
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => void cleanup().finally(() => process.exit(130)));
}

// ---- the load generator child ---------------------------------------------------------------------------
class LoadChild {
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private constructor(private readonly child: ChildProcess) {
    child.on("message", (raw) => {
      const { seq, result, error } = raw as { seq: number; result?: unknown; error?: string };
      const waiter = this.pending.get(seq);
      this.pending.delete(seq);
      if (error !== undefined) waiter?.reject(new Error(`load generator: ${error}`));
      else waiter?.resolve(result);
    });
    child.on("exit", (code) => {
      for (const w of this.pending.values()) w.reject(new Error(`load generator exited (${code})`));
      this.pending.clear();
    });
  }

  static start(): LoadChild {
    const child = fork(join(REPO_ROOT, "bench", "gateway-load.ts"), [], {
      execArgv: ["--import", "tsx"],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    return new LoadChild(child);
  }

  send<T>(cmd: LoadCommand): Promise<T> {
    const seq = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(seq, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ seq, cmd });
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once("exit", r));
    this.child.disconnect();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 3_000);
    await exited;
    clearTimeout(timer);
  }
}

// ---- supergateway -------------------------------------------------------------------------------------

function descendants(pid: number): number[] {
  try {
    const out = spawnSyncText("ps", ["-o", "pid=", "--ppid", String(pid)]);
    const kids = out.split("\n").map((s) => Number(s.trim())).filter((n) => n > 0);
    return kids.flatMap((k) => [k, ...descendants(k)]);
  } catch {
    return [];
  }
}

function spawnSyncText(cmd: string, args: string[]): string {
  return spawnSync(cmd, args, { encoding: "utf8" }).stdout ?? "";
}

interface Supergateway {
  url: string;
  /** The server round trip of the newest tools/call, as stamped inside supergateway (supergateway-stamps.mjs). */
  lastRoundTrip(): Promise<{ id: number; roundTripMs: number } | undefined>;
  stop(): Promise<void>;
}

async function startSupergateway(env: NodeJS.ProcessEnv): Promise<Supergateway> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [
      "--import", pathToFileURL(join(REPO_ROOT, "bench", "supergateway-stamps.mjs")).href,
      SUPERGATEWAY,
      "--stdio", `${JSON.stringify(process.execPath)} ${JSON.stringify(MEMORY_SERVER)}`,
      "--outputTransport", "streamableHttp",
      "--stateful",
      "--sessionTimeout", "600000",
      "--port", String(port),
      "--logLevel", "none",
      "--healthEndpoint", "/healthz",
    ],
    { env, stdio: ["pipe", "ignore", "inherit", "ipc"] },
  );
  const lastRoundTrip = () =>
    new Promise<{ id: number; roundTripMs: number } | undefined>((resolve) => {
      child.once("message", (m) => resolve((m as { last?: { id: number; roundTripMs: number } }).last));
      child.send({ op: "last" });
    });
  const exited = new Promise((r) => child.once("exit", r));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    // supergateway starts each session's server in its own process group and kills them on SIGTERM;
    // whatever is still alive after that is killed here, so no server-memory outlives the bench.
    const kids = descendants(child.pid!);
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
    await exited;
    clearTimeout(timer);
    for (const pid of kids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null) throw new Error(`supergateway exited with ${child.exitCode}`);
    if (Date.now() > deadline) {
      await stop();
      throw new Error("supergateway did not start listening within 20 s");
    }
    await sleep(50);
  }
  return { url: `http://127.0.0.1:${port}/mcp`, lastRoundTrip, stop };
}

// ---- mcpvisor: the session's clone, and the times the gateway hands a call to it ------------------------
interface Stamps {
  requestStart?: number;
  channelSend?: number;
  channelReply?: number;
  responseFinish?: number;
  sentId?: number;
}

/** Captures every sandbox the gateway leases, so the bench can talk to the session's own clone. */
function captureLeases(gateway: Gateway): Sandbox[] {
  const leased: Sandbox[] = [];
  // Leases hide their sandbox from the router; the bench reaches past them, at the one place clones are handed out.
  const acquire = ServerPool.prototype.acquire;
  ServerPool.prototype.acquire = async function (this: ServerPool) {
    const sandbox = await acquire.call(this);
    if (this.unit.members.some((m) => gateway.pool.has(m.name))) leased.push(sandbox);
    return sandbox;
  };
  return leased;
}

/**
 * Direct round trips on a clone's channel, and time stamps of the session's own calls on it. The stamp
 * listener goes first among the channel's listeners when the channel allows it, so a reply's time is
 * taken before the gateway does any work on it.
 */
class ChannelProbe {
  private readonly replies = new Map<number, { resolve: (m: JsonRpcMessage) => void; t0: number; t1?: number }>();
  private nextId = 1;
  readonly stampsFirst: boolean;
  stamps: Stamps = {};
  /** The newest client tools/call the gateway put on the channel, exactly as it sent it (e.g. with _meta). */
  private lastForwarded: JsonRpcMessage | undefined;

  constructor(private readonly channel: GuestChannel) {
    const send = channel.send.bind(channel);
    channel.send = (server: string, message: JsonRpcMessage) => {
      if (message.method === "tools/call" && typeof message.id === "number" && message.id > 0) {
        this.stamps.sentId = message.id;
        this.stamps.channelSend = performance.now();
        this.lastForwarded = message;
      }
      send(server, message);
    };
    const stamp = (_server: string, message: JsonRpcMessage) => {
      const now = performance.now();
      if (typeof message.id !== "number" || "method" in message) return;
      if (message.id === this.stamps.sentId) this.stamps.channelReply = now;
      const waiter = this.replies.get(message.id);
      if (waiter) {
        this.replies.delete(message.id);
        waiter.t1 = now;
        waiter.resolve(message);
      }
    };
    const listeners = (channel as unknown as { mcpListeners?: unknown }).mcpListeners;
    if (listeners instanceof Set) {
      const before = [...(listeners as Set<unknown>)];
      listeners.clear();
      listeners.add(stamp);
      for (const l of before) listeners.add(l);
      this.stampsFirst = true;
    } else {
      channel.onMessage(stamp);
      this.stampsFirst = false;
    }
  }

  /**
   * One tools/call straight down the channel: the very message the gateway forwarded for the session's
   * last call (so the guest does the same work, trace context included), under a negative id that never
   * meets a client's. Resolves with the reply and the round trip.
   */
  async send(tool: string, args: Record<string, unknown>): Promise<{ answer: JsonRpcMessage; ms: number }> {
    const id = -(1_000_000 + this.nextId++);
    let entry!: { resolve: (m: JsonRpcMessage) => void; t0: number; t1?: number };
    const reply = new Promise<JsonRpcMessage>((resolve) => {
      entry = { resolve, t0: 0 };
      this.replies.set(id, entry);
    });
    entry.t0 = performance.now();
    const message = this.lastForwarded ?? { jsonrpc: "2.0", method: "tools/call", params: { name: tool, arguments: args } };
    this.channel.send(SERVER, { ...message, id });
    const answer = await reply;
    if (answer.error || (answer.result as { isError?: boolean } | undefined)?.isError) {
      throw new Error(`direct ${tool}: ${JSON.stringify(answer.error ?? answer.result)}`);
    }
    return { answer, ms: entry.t1! - entry.t0 };
  }

  async call(tool: string, args: Record<string, unknown>): Promise<number> {
    return (await this.send(tool, args)).ms;
  }
}

/**
 * The reference path: the least a node gateway can do with an MCP call over HTTP here. It answers
 * `initialize` and notifications itself and sends every request down the probe's channel.
 */
async function startFloorProxy(probe: ChannelProbe): Promise<{ url: string; server: Server }> {
  const server = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      if (req.method !== "POST") return void res.writeHead(200).end();
      const message = JSON.parse(Buffer.concat(chunks).toString("utf8")) as JsonRpcMessage;
      const json = (body: unknown, headers: Record<string, string> = {}) => {
        const text = JSON.stringify(body);
        res.writeHead(200, { "content-type": "application/json", "content-length": String(Buffer.byteLength(text)), ...headers }).end(text);
      };
      if (message.id === undefined) return void res.writeHead(202).end();
      if (message.method === "initialize") {
        return json({ jsonrpc: "2.0", id: message.id, result: { protocolVersion: "2025-11-25", capabilities: { tools: {} }, serverInfo: { name: "floor", version: "0" } } }, { "mcp-session-id": "floor" });
      }
      probe.send(TOOL, ARGS).then(
        ({ answer }) => json({ ...answer, id: message.id }),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}/mcp`, server };
}

function qemuAccel(pid: number): string {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    const i = argv.indexOf("-accel");
    return i >= 0 ? (argv[i + 1] ?? "?").split(",")[0]! : "?";
  } catch {
    return "?";
  }
}

async function poolFull(gateway: Gateway, prestarted: number, warm: number, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = gateway.pool.stats().find((p) => p.server === SERVER)!;
    if (s.warm >= warm && s.prestarted >= prestarted) return;
    if (Date.now() > deadline) throw new Error(`pool not refilled within ${timeoutMs} ms: ${JSON.stringify(s)}`);
    await sleep(50);
  }
}

function shuffle<T>(items: T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

// ---- the run ----------------------------------------------------------------------------------------------
const POOL = { prestarted: 4, warm: 1 };
const started = performance.now();
const dir = await mkdtemp(join(tmpdir(), "mcpv-bench-gw-"));
cleanups.push(() => rm(dir, { recursive: true, force: true }));
const hostEnv = { ...process.env, MEMORY_FILE_PATH: join(dir, "memory.jsonl") };

try {
  progress("starting mcpvisor (memory server only)");
  // The sessions' clones must not be suspended while the bench measures calls: a phase that keeps one
  // session idle past the default 60 s (the SDK session, during the first phase) would lose its clone.
  // The clone stays running: a direct call down its channel (the baseline) would wait for a frozen guest.
  const noSuspend = await serversDirWith({ [SERVER]: (m) => ({ timeouts: { ...m.timeouts, idleSuspendMs: 0 }, guest: { ...m.guest, freezeWhenIdle: false } }) });
  const config = testConfig({ servers: [SERVER], serversDir: noSuspend });
  const gateway = await startGateway(config, createLogger("silent"), progress, { pool: POOL });
  cleanups.push(() => gateway.close());
  await gateway.settled;
  const ready = gateway.readiness.report();
  if (!ready.ready) throw new Error(`mcpvisor not ready: ${ready.reasons.join("; ")}`);
  const leased = captureLeases(gateway);
  const mcpvUrl = `http://127.0.0.1:${gateway.port}/mcp`;

  // Gateway-side time stamps of each request (this process hosts only mcpvisor's HTTP server).
  let probe: ChannelProbe | undefined;
  subscribe("http.server.request.start", () => {
    if (probe) probe.stamps.requestStart = performance.now();
  });
  subscribe("http.server.response.finish", () => {
    if (probe) probe.stamps.responseFinish = performance.now();
  });

  progress("starting supergateway and a direct server-memory process");
  const supergateway = await startSupergateway(hostEnv);
  cleanups.push(supergateway.stop);
  const direct = await StdioMcpProcess.start(process.execPath, [MEMORY_SERVER], hostEnv);
  cleanups.push(() => direct.stop());

  const load = LoadChild.start();
  cleanups.push(() => load.stop());
  const sdk = SDK;
  await load.send({ op: "open", key: "mcpv", url: mcpvUrl, n: 1, kind: "raw" });
  await load.send({ op: "open", key: "sg", url: supergateway.url, n: 1, kind: "raw" });
  if (sdk) {
    await load.send({ op: "open", key: "mcpv-sdk", url: mcpvUrl, n: 1, kind: "sdk" });
    await load.send({ op: "open", key: "sg-sdk", url: supergateway.url, n: 1, kind: "sdk" });
  }
  // The first call resumes the session's clone; it is the one the direct calls then go to.
  await load.send({ op: "call", key: "mcpv", tool: `${SERVER}__${TOOL}`, args: ARGS });
  if (sdk) {
    await load.send({ op: "call", key: "mcpv-sdk", tool: `${SERVER}__${TOOL}`, args: ARGS });
    await load.send({ op: "call", key: "sg-sdk", tool: TOOL, args: ARGS });
  }
  // The principal's 2026-07-28 session (stateless requests, no Mcp-Session-Id) has a clone of its own too.
  await load.send({ op: "open", key: "mcpv-2026", url: mcpvUrl, n: 1, kind: "raw-2026" });
  await load.send({ op: "call", key: "mcpv-2026", tool: `${SERVER}__${TOOL}`, args: ARGS });
  const modernVm = leased.at(-1)?.vm;
  if (!modernVm || leased.length < (sdk ? 3 : 2)) throw new Error("the 2026-07-28 requests have no running sandbox of their own");
  const modernProbe = new ChannelProbe(modernVm.channel);
  const sandbox = leased[0];
  if (!sandbox) throw new Error("the gateway leased no sandbox for the session");
  const vm = sandbox.vm;
  if (!vm) throw new Error(`the session's sandbox is not running (${sandbox.state})`);
  probe = new ChannelProbe(vm.channel);
  // The SDK Client's session has a clone of its own: its overhead is taken against that clone's channel.
  const sdkVm = sdk ? leased[1]?.vm : undefined;
  if (sdk && !sdkVm) throw new Error("the SDK Client's session has no running sandbox");
  const sdkProbe = sdkVm ? new ChannelProbe(sdkVm.channel) : undefined;
  const floor = await startFloorProxy(probe);
  cleanups.push(() => {
    floor.server.closeAllConnections();
    return new Promise((resolve) => floor.server.close(resolve));
  });
  await load.send({ op: "open", key: "floor", url: floor.url, n: 1, kind: "raw" });
  const accel = qemuAccel(vm.pid);
  await poolFull(gateway, POOL.prestarted, POOL.warm);

  // ---- latency, interleaved ----
  const SERIES = ["floor-e2e", "mcpv-e2e", "mcpv-direct", "mcpv-2026", "mcpv-2026-direct", "sg-e2e", "sg-direct", "mcpv-sdk", "mcpv-sdk-direct", "sg-sdk", "sg-sdk-direct"] as const;
  type Series = (typeof SERIES)[number];
  const samples = Object.fromEntries(SERIES.map((k) => [k, [] as number[]])) as Record<Series, number[]>;
  const paired = { mcpv: [] as number[], modern: [] as number[], sg: [] as number[] };
  const parts = { client: [] as number[], inbound: [] as number[], guest: [] as number[], outbound: [] as number[] };
  /** End to end minus the server's round trip of that very call, as stamped inside each gateway. */
  const sameCall = { mcpv: [] as number[], sg: [] as number[] };
  let lastE2e: { ms: number; id?: number } = { ms: NaN };
  const p = probe;
  const directCall = async () => {
    const t0 = performance.now();
    const result = await direct.request("tools/call", { name: TOOL, arguments: ARGS });
    if (result.isError) throw new Error("direct read_graph failed");
    return performance.now() - t0;
  };
  const run: Record<Series, () => Promise<number>> = {
    "floor-e2e": async () => (await load.send<{ ms: number }>({ op: "call", key: "floor", tool: TOOL, args: ARGS })).ms,
    "mcpv-e2e": async () => {
      p.stamps = {};
      lastE2e = await load.send<{ ms: number; id?: number }>({ op: "call", key: "mcpv", tool: `${SERVER}__${TOOL}`, args: ARGS });
      return lastE2e.ms;
    },
    "mcpv-direct": () => p.call(TOOL, ARGS),
    "mcpv-2026": async () => (await load.send<{ ms: number }>({ op: "call", key: "mcpv-2026", tool: `${SERVER}__${TOOL}`, args: ARGS })).ms,
    "mcpv-2026-direct": () => modernProbe.call(TOOL, ARGS),
    "sg-e2e": async () => {
      lastE2e = await load.send<{ ms: number; id?: number }>({ op: "call", key: "sg", tool: TOOL, args: ARGS });
      return lastE2e.ms;
    },
    "sg-direct": directCall,
    "mcpv-sdk": async () => (await load.send<{ ms: number }>({ op: "call", key: "mcpv-sdk", tool: `${SERVER}__${TOOL}`, args: ARGS })).ms,
    "mcpv-sdk-direct": () => sdkProbe!.call(TOOL, ARGS),
    "sg-sdk": async () => (await load.send<{ ms: number }>({ op: "call", key: "sg-sdk", tool: TOOL, args: ARGS })).ms,
    "sg-sdk-direct": directCall,
  };
  /** Rounds of one call per path in a shuffled order, so drift on a noisy machine hits every path alike. */
  const interleave = async (paths: Series[], what: string) => {
    progress(`latency, ${what}: ${WARMUP} warm-up + ${CALLS} measured rounds, each one call per path in a shuffled order`);
    const phaseStart = performance.now();
    for (let round = 0; round < WARMUP + CALLS; round++) {
      const measured = round >= WARMUP;
      const order = shuffle(paths);
      const got: Partial<Record<Series, number>> = {};
      for (const series of order) {
        const ms = await run[series]();
        got[series] = ms;
        if (series === "mcpv-e2e" && measured) {
          const s = p.stamps;
          if (s.sentId !== lastE2e.id) throw new Error(`stamped call ${s.sentId} is not the client's ${lastE2e.id}`);
          if (s.requestStart !== undefined && s.channelSend !== undefined && s.channelReply !== undefined && s.responseFinish !== undefined) {
            const guest = s.channelReply - s.channelSend;
            parts.guest.push(guest);
            parts.inbound.push(s.channelSend - s.requestStart);
            parts.outbound.push(s.responseFinish - s.channelReply);
            parts.client.push(ms - (s.responseFinish - s.requestStart));
            sameCall.mcpv.push(ms - guest);
          }
        }
        if (series === "sg-e2e" && measured) {
          const last = await supergateway.lastRoundTrip();
          if (!last || last.id !== lastE2e.id) throw new Error(`supergateway stamped call ${last?.id} is not the client's ${lastE2e.id}`);
          sameCall.sg.push(ms - last.roundTripMs);
        }
      }
      if (!measured) continue;
      for (const series of order) samples[series].push(got[series]!);
      if (got["mcpv-e2e"] !== undefined) paired.mcpv.push(got["mcpv-e2e"] - got["mcpv-direct"]!);
      if (got["mcpv-2026"] !== undefined) paired.modern.push(got["mcpv-2026"] - got["mcpv-2026-direct"]!);
      if (got["sg-e2e"] !== undefined) paired.sg.push(got["sg-e2e"] - got["sg-direct"]!);
      if ((round - WARMUP + 1) % 250 === 0) progress(`  ${round - WARMUP + 1}/${CALLS} rounds`);
    }
    progress(`  took ${((performance.now() - phaseStart) / 1000).toFixed(0)} s`);
  };
  await interleave(["floor-e2e", "mcpv-e2e", "mcpv-direct", "mcpv-2026", "mcpv-2026-direct", "sg-e2e", "sg-direct"], "minimal HTTP client");
  // A phase of its own: the SDK Client's CPU work (schemas, a full MCP client) on this 2-core machine would
  // otherwise compete with the calls of the other paths in the same round.
  if (sdk) await interleave(["mcpv-sdk", "mcpv-sdk-direct", "sg-sdk", "sg-sdk-direct"], "SDK Client");
  for (const key of ["floor", "mcpv", "mcpv-2026", "sg", "mcpv-sdk", "sg-sdk"]) await load.send({ op: "close", key });
  probe = undefined;

  // ---- throughput ----
  // Each level opens its own n sessions and ends them after, so sessions left over from a bigger level
  // never slow a smaller one down. mcpvisor runs twice, with its run gate (the default) and without
  // (`guestRunSlots: 0`, a second gateway on the same templates): the gate's effect, in the same run.
  progress(`throughput: ${CONCURRENCY.join(", ")} concurrent clients, each its own session (mcpvisor: its own clone)`);
  const ungatedGateway = await startGateway({ ...config, guestRunSlots: 0 }, createLogger("silent"), () => undefined, { pool: POOL });
  cleanups.push(() => ungatedGateway.close());
  await ungatedGateway.settled;
  const throughput: Array<{ n: number; mcpv: LoadResult; ungated: LoadResult; sg: LoadResult }> = [];
  const level = async (target: "mcpv" | "ungated" | "sg", n: number): Promise<LoadResult> => {
    const key = `${target}-tp-${n}`;
    const url = target === "mcpv" ? mcpvUrl : target === "ungated" ? `http://127.0.0.1:${ungatedGateway.port}/mcp` : supergateway.url;
    const tool = target === "sg" ? TOOL : `${SERVER}__${TOOL}`;
    await load.send({ op: "open", key, url, n, kind: "raw" });
    try {
      const t0 = performance.now();
      // Three calls per client before the clock (for mcpvisor the first one resumes the session's clone).
      await load.send({ op: "load", key, n, tool, args: ARGS, warmupMs: 0, windowMs: 1 });
      if (target !== "sg") {
        progress(`  ${n} mcpvisor sessions: clones resumed and warmed in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        await poolFull(target === "mcpv" ? gateway : ungatedGateway, POOL.prestarted, POOL.warm);
      }
      return await load.send<LoadResult>({ op: "load", key, n, tool, args: ARGS, warmupMs: LOAD_WARMUP_MS, windowMs: WINDOW_MS });
    } finally {
      await load.send({ op: "close", key });
    }
  };
  for (const [i, n] of CONCURRENCY.entries()) {
    // Alternate which gateway goes first, so a drift in machine load does not always favour the same one.
    const order: Array<"mcpv" | "ungated" | "sg"> = i % 2 === 0 ? ["mcpv", "ungated", "sg"] : ["sg", "ungated", "mcpv"];
    const got: Partial<Record<"mcpv" | "ungated" | "sg", LoadResult>> = {};
    for (const target of order) got[target] = await level(target, n);
    const { mcpv, ungated, sg } = got as Record<"mcpv" | "ungated" | "sg", LoadResult>;
    throughput.push({ n, mcpv, ungated, sg });
    const perSecond = (r: LoadResult) => (r.calls / (WINDOW_MS / 1000)).toFixed(0);
    progress(`  ${n} clients: mcpvisor ${perSecond(mcpv)} calls/s (run gate off: ${perSecond(ungated)}), supergateway ${perSecond(sg)} calls/s`);
  }

  // ---- report ----
  const pct = (xs: number[], q: number) => percentile(xs, q);
  const ms2 = (v: number) => (Number.isNaN(v) ? "-" : `${v.toFixed(2)} ms`);
  const over = {
    mcpv: { p50: pct(samples["mcpv-e2e"], 50) - pct(samples["mcpv-direct"], 50), p99: pct(samples["mcpv-e2e"], 99) - pct(samples["mcpv-direct"], 99) },
    sg: { p50: pct(samples["sg-e2e"], 50) - pct(samples["sg-direct"], 50), p99: pct(samples["sg-e2e"], 99) - pct(samples["sg-direct"], 99) },
  };
  const same = {
    mcpv: { p50: pct(sameCall.mcpv, 50), p99: pct(sameCall.mcpv, 99) },
    sg: { p50: pct(sameCall.sg, 50), p99: pct(sameCall.sg, 99) },
  };
  const pair = (xs: number[]) => `${ms2(pct(xs, 50))} / ${ms2(pct(xs, 99))}`;
  const row = (name: string, xs: number[], overhead?: { p50: number; p99: number }, pairs?: number[], exact?: number[]) => [
    name,
    String(xs.length),
    ms2(pct(xs, 50)),
    ms2(pct(xs, 99)),
    overhead ? `${ms2(overhead.p50)} / ${ms2(overhead.p99)}` : "",
    pairs ? pair(pairs) : "",
    exact ? pair(exact) : "",
  ];
  const sdkOver = (e2e: Series, base: Series) => ({ p50: pct(samples[e2e], 50) - pct(samples[base], 50), p99: pct(samples[e2e], 99) - pct(samples[base], 99) });
  const rows = [
    row("mcpvisor: /mcp end to end (minimal HTTP client)", samples["mcpv-e2e"], over.mcpv, paired.mcpv, sameCall.mcpv),
    row("mcpvisor: same clone, straight down the sandbox channel", samples["mcpv-direct"]),
    row("mcpvisor: /mcp end to end, 2026-07-28 stateless requests (minimal HTTP client)", samples["mcpv-2026"], sdkOver("mcpv-2026", "mcpv-2026-direct"), paired.modern),
    row("mcpvisor: the 2026 principal's clone, straight down its channel", samples["mcpv-2026-direct"]),
    row("reference: minimal node:http proxy down that channel (the floor)", samples["floor-e2e"], {
      p50: pct(samples["floor-e2e"], 50) - pct(samples["mcpv-direct"], 50),
      p99: pct(samples["floor-e2e"], 99) - pct(samples["mcpv-direct"], 99),
    }),
    row("supergateway 4.0.0: end to end (minimal HTTP client)", samples["sg-e2e"], over.sg, paired.sg, sameCall.sg),
    row("supergateway: a server-memory process, straight over stdio", samples["sg-direct"]),
  ];
  if (sdk) {
    rows.push(row("mcpvisor: /mcp end to end, SDK Client", samples["mcpv-sdk"], sdkOver("mcpv-sdk", "mcpv-sdk-direct")));
    rows.push(row("mcpvisor: the SDK Client session's clone, straight down its channel", samples["mcpv-sdk-direct"]));
    rows.push(row("supergateway: end to end, SDK Client", samples["sg-sdk"], sdkOver("sg-sdk", "sg-sdk-direct")));
    rows.push(row("supergateway: a server-memory process, straight over stdio (SDK phase)", samples["sg-sdk-direct"]));
  }
  const cpu = cpus()[0]?.model ?? "cpu";
  console.log(
    `\nbench/gateway — server-memory ${TOOL}, ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ${cpu}; mcpvisor guest: ${accel}, ` +
      `node ${process.version}; ${CALLS} interleaved rounds after ${WARMUP} warm-up`,
  );
  console.log(
    "mcpvisor's server runs in a guest (TCG: emulated CPU, --jitless node), supergateway's on the host CPU with a JIT, " +
      "so absolute latencies differ by design: compare the overheads (end to end − direct).\n",
  );
  console.log(
    table(["path", "n", "latency p50", "latency p99", "overhead p50 / p99: e2e − direct", "paired rounds p50 / p99", "same call p50 / p99"], rows),
  );
  console.log(
    "\noverhead columns: 'e2e − direct' = percentile of end to end − the same percentile of the direct series; 'paired rounds' = " +
      "percentiles of (e2e − direct) within each round (adds both calls' server jitter); 'same call' = end to end − the server round " +
      "trip of that very call, stamped inside the gateway at its channel/stdio pipe (no server jitter).",
  );
  if (parts.guest.length > 0) {
    console.log(`\nmcpvisor end to end, split by time stamps in the gateway process (same calls; p50 / p99${p.stampsFirst ? "" : "; reply stamp taken after the gateway's own listener"}):\n`);
    console.log(
      table(
        ["segment", "p50", "p99"],
        [
          ["client + loopback TCP (client process, kernel)", ms2(pct(parts.client, 50)), ms2(pct(parts.client, 99))],
          ["gateway inbound: HTTP request start → channel send", ms2(pct(parts.inbound, 50)), ms2(pct(parts.inbound, 99))],
          ["sandbox channel round trip of that call (guest)", ms2(pct(parts.guest, 50)), ms2(pct(parts.guest, 99))],
          ["gateway outbound: channel reply → HTTP response finished", ms2(pct(parts.outbound, 50)), ms2(pct(parts.outbound, 99))],
        ],
      ),
    );
  }
  console.log(`\nthroughput, calls/s over ${WINDOW_MS / 1000} s after ${LOAD_WARMUP_MS / 1000} s of warm-up (each client its own session; mcpvisor: its own clone):\n`);
  const rate = (r: LoadResult) => r.calls / (r.windowMs / 1000);
  console.log(
    table(
      ["clients", "mcpvisor calls/s", `÷ ${CONCURRENCY[0]} client(s)`, "mcpvisor latency p50 / p99", "run gate off: calls/s", `÷ ${CONCURRENCY[0]} client(s)`, "supergateway calls/s", "supergateway latency p50 / p99", "errors"],
      throughput.map(({ n, mcpv, ungated, sg }) => [
        String(n),
        rate(mcpv).toFixed(0),
        (rate(mcpv) / rate(throughput[0]!.mcpv)).toFixed(2),
        `${fmtMs(mcpv.p50)} / ${fmtMs(mcpv.p99)}`,
        rate(ungated).toFixed(0),
        (rate(ungated) / rate(throughput[0]!.ungated)).toFixed(2),
        rate(sg).toFixed(0),
        `${fmtMs(sg.p50)} / ${fmtMs(sg.p99)}`,
        `${mcpv.errors} / ${ungated.errors} / ${sg.errors}`,
      ]),
    ),
  );
  // Two estimators, neither perfect on a noisy 2-core TCG host: 'same call' has no guest jitter but books as
  // guest time whatever the gateway's own CPU work slows the guest down by; 'e2e − direct' includes that but
  // carries the guest's jitter (at p99 mostly noise). A target counts as met only if both meet it.
  const both = (a: boolean, b: boolean) => (a && b ? "met" : a || b ? "NOT met (met by one estimator only)" : "NOT met");
  const detail = (x: { p50: number; p99: number }, y: { p50: number; p99: number }, q: "p50" | "p99") => `same call ${ms2(x[q])}, e2e − direct ${ms2(y[q])}`;
  console.log("");
  console.log(`target mcpvisor overhead p50 ≤ 0.5 ms: ${both(same.mcpv.p50 <= 0.5, over.mcpv.p50 <= 0.5)} (${detail(same.mcpv, over.mcpv, "p50")})`);
  console.log(`target mcpvisor overhead p99 ≤ 2 ms: ${both(same.mcpv.p99 <= 2, over.mcpv.p99 <= 2)} (${detail(same.mcpv, over.mcpv, "p99")})`);
  const half = (m: { p50: number; p99: number }, g: { p50: number; p99: number }) => m.p50 <= g.p50 / 2 && m.p99 <= g.p99 / 2;
  const ratios = (m: { p50: number; p99: number }, g: { p50: number; p99: number }) =>
    `p50 ${ms2(m.p50)} vs ${ms2(g.p50)} (×${(m.p50 / g.p50).toFixed(2)}), p99 ${ms2(m.p99)} vs ${ms2(g.p99)} (×${(m.p99 / g.p99).toFixed(2)})`;
  console.log(
    `target mcpvisor overhead ≤ half of supergateway's (p50 and p99): ${both(half(same.mcpv, same.sg), half(over.mcpv, over.sg))} ` +
      `(same call: ${ratios(same.mcpv, same.sg)}; e2e − direct: ${ratios(over.mcpv, over.sg)})`,
  );
  progress(`done in ${((performance.now() - started) / 1000).toFixed(0)} s`);
} finally {
  await cleanup();
}
