/**
 * bench/resume: how much faster a session starts from a snapshot than from a cold boot, per target in the
 * same run: server-memory (node), mcp-server-time (Python, from PyPI), and the workspace (filesystem, exec
 * and git sharing one guest, reached through `/mcp`).
 *   cold:       QEMU start -> kernel boot -> servers start -> initialize (each) -> first tools/call answered
 *   warm pool:  session start (initialize) -> first tools/call answered, a clone resumed and warmed ahead
 *   on demand:  the same with no warm clone: a prestarted VMM loads the snapshot for this session
 * Then the disk a suspended session takes: a memory session holding one entity, and a workspace session
 * holding a small git repository (two files, one commit).
 * Sessions use a minimal HTTP client (raw-mcp-client.ts), so the figures are the gateway's and the VM's.
 * Usage: npm run bench:resume [-- --sessions 20 --cold 3 --targets memory,time,workspace --suspended 5 --freeze on|both]
 */
import { mkdtemp, rm, stat } from "node:fs/promises";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { loadManifests } from "../src/config/load.js";
import { sandboxUnits } from "../src/config/sandbox-unit.js";
import { serverChannel } from "../src/sandbox/driver.js";
import { REPO_ROOT, startGateway } from "../src/main.js";
import { guestNotify, guestRequest } from "../src/sandbox/guest-rpc.js";
import { prepareGuests } from "../src/sandbox/guest-images.js";
import { QemuDriver } from "../src/sandbox/qemu/qemu-driver.js";
import { createLogger } from "../src/telemetry/log.js";
import { serversDirWith, testConfig } from "../test/helpers.js";
import { RawMcpClient } from "./raw-mcp-client.js";
import { fmtMs, percentile, table } from "./stats.js";

const { values } = parseArgs({
  options: {
    sessions: { type: "string", default: "20" },
    cold: { type: "string", default: "3" },
    targets: { type: "string", default: "memory,time,workspace" },
    suspended: { type: "string", default: "5" },
    /** `both`: also the warm pool with idle guests left running, side by side (issue 17's before/after). */
    freeze: { type: "string", default: "on" },
  },
});
const FREEZE_BOTH = values.freeze === "both";
const SESSIONS = Number(values.sessions);
const COLD = Number(values.cold);
const SUSPENDED = Number(values.suspended);

/** A tool of one server, called through the target's route (`<server>__<tool>` on `/mcp`). */
interface ToolCall {
  server: string;
  name: string;
  arguments: Record<string, unknown>;
}
interface Target {
  servers: string[];
  /** `/servers/<name>/mcp` for one server, `/mcp` for several. */
  route: string;
  /** The first call of a session (what is timed from its start), and a next one. */
  first: ToolCall;
  next: ToolCall;
  /** What a session holds when its disk size is measured. */
  state?: ToolCall[];
}
const REPO = "/workspace/calc";
const TARGETS: Record<string, Target> = {
  memory: {
    servers: ["memory"],
    route: "servers/memory/mcp",
    first: { server: "memory", name: "read_graph", arguments: {} },
    next: { server: "memory", name: "search_nodes", arguments: { query: "x" } },
    state: [{ server: "memory", name: "create_entities", arguments: { entities: [{ name: "kept", entityType: "t", observations: ["across suspend"] }] } }],
  },
  time: {
    servers: ["time"],
    route: "servers/time/mcp",
    first: { server: "time", name: "get_current_time", arguments: { timezone: "UTC" } },
    next: { server: "time", name: "convert_time", arguments: { source_timezone: "UTC", time: "12:00", target_timezone: "Asia/Tokyo" } },
  },
  workspace: {
    servers: ["exec", "filesystem", "git"],
    route: "mcp",
    first: { server: "filesystem", name: "list_directory", arguments: { path: "/workspace" } },
    next: { server: "exec", name: "run", arguments: { command: "ls /workspace" } },
    state: [
      { server: "filesystem", name: "create_directory", arguments: { path: REPO } },
      { server: "filesystem", name: "write_file", arguments: { path: `${REPO}/calc.py`, content: "def add(a, b):\n    return a + b\n" } },
      { server: "filesystem", name: "write_file", arguments: { path: `${REPO}/test_calc.py`, content: "import unittest\nfrom calc import add\n\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n" } },
      { server: "exec", name: "run", arguments: { command: `cd ${REPO} && git init -q && python3 -m unittest -q 2>&1` } },
      { server: "git", name: "git_add", arguments: { repo_path: REPO, files: ["calc.py", "test_calc.py"] } },
      { server: "git", name: "git_commit", arguments: { repo_path: REPO, message: "add calc" } },
    ],
  },
};
const NAMES = values.targets.split(",").filter(Boolean);
for (const name of NAMES) if (!TARGETS[name]) throw new Error(`no target '${name}' (have: ${Object.keys(TARGETS).join(", ")})`);
const log = createLogger("silent");
const progress = (line: string) => process.stderr.write(`[bench] ${line}\n`);

/** The call as the target's route names it. */
function viaRoute(target: Target, call: ToolCall): { name: string; arguments: Record<string, unknown> } {
  return { name: target.route === "mcp" ? `${call.server}__${call.name}` : call.name, arguments: call.arguments };
}

async function callOk(client: RawMcpClient, target: Target, call: ToolCall): Promise<void> {
  const result = (await client.request("tools/call", viaRoute(target, call))) as CallToolResult;
  if (result.isError) throw new Error(`${call.server} ${call.name} failed: ${JSON.stringify(result.content)}`);
}

async function coldBoots(target: Target): Promise<number[]> {
  const config = testConfig();
  const driver = new QemuDriver({ runDir: config.runDir });
  const [unit] = sandboxUnits(await loadManifests(join(REPO_ROOT, "servers"), target.servers), join(REPO_ROOT, "servers"));
  const plan = await prepareGuests([unit!], {
    build: { cacheDir: config.cacheDir, repoRoot: REPO_ROOT, progress },
    driver,
    accel: config.accel,
    runDir: config.runDir,
    log,
  });
  const spec = await plan.specs.get(unit!.name)!;
  progress(`accelerator: ${plan.accel.accel} (${plan.accel.reason})`);
  const times: number[] = [];
  for (let i = 0; i < COLD; i++) {
    const dir = await mkdtemp(join(tmpdir(), "mcpv-cold-"));
    const t0 = performance.now();
    const vm = await driver.boot(spec, join(dir, "ram"), 120_000);
    for (const server of target.servers) {
      const channel = serverChannel(vm.channel, server);
      await guestRequest(channel, "initialize", { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "bench", version: "0" } }, 60_000);
      guestNotify(channel, "notifications/initialized");
    }
    const { server, name, arguments: args } = target.first;
    await guestRequest(serverChannel(vm.channel, server), "tools/call", { name, arguments: args }, 60_000);
    times.push(performance.now() - t0);
    await vm.kill("bench");
    await rm(dir, { recursive: true, force: true });
    progress(`cold boot ${i + 1}/${COLD}: ${fmtMs(times.at(-1)!)}`);
  }
  return times;
}

interface SessionSample {
  first: number;
  next: number;
}

async function sessions(target: Target, warm: number, freezeWhenIdle = true): Promise<SessionSample[]> {
  const serversDir = await serversDirWith(Object.fromEntries(target.servers.map((s) => [s, (m) => ({ guest: { ...m.guest, freezeWhenIdle } })])));
  const config = testConfig({ servers: target.servers, serversDir });
  const gateway = await startGateway(config, log, () => undefined, { pool: { prestarted: 2, warm } });
  await gateway.settled;
  const url = `http://127.0.0.1:${gateway.port}/${target.route}`;
  const samples: SessionSample[] = [];
  const connectTimes: number[] = [];
  const poolFull = () => {
    const s = gateway.pool.stats().find((p) => p.members.includes(target.servers[0]!))!;
    return s.warm >= warm && s.prestarted >= 2;
  };
  try {
    for (let i = 0; i < SESSIONS; i++) {
      const deadline = Date.now() + 30_000;
      while (!poolFull() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const t0 = performance.now();
      const client = new RawMcpClient(url);
      await client.initialize();
      connectTimes.push(performance.now() - t0);
      await callOk(client, target, target.first);
      const t1 = performance.now();
      await callOk(client, target, target.next);
      const t2 = performance.now();
      samples.push({ first: t1 - t0, next: t2 - t1 });
      await client.close();
    }
  } finally {
    await gateway.close();
  }
  progress(`  of which initialize (answered by the gateway): p50 ${fmtMs(percentile(connectTimes, 50))}`);
  return samples;
}

/** Bytes on disk of each of `SUSPENDED` sessions holding the target's state, suspended when idle. */
async function suspendedBytes(target: Target): Promise<number[]> {
  const serversDir = await serversDirWith(Object.fromEntries(target.servers.map((s) => [s, (m) => ({ timeouts: { ...m.timeouts, idleSuspendMs: 1_000 } })])));
  const config = testConfig({ servers: target.servers, serversDir });
  const gateway = await startGateway(config, log, () => undefined, { pool: { prestarted: 1, warm: 1 } });
  await gateway.settled;
  const stats = () => gateway.pool.stats().find((p) => p.members.includes(target.servers[0]!))!;
  const sizes: number[] = [];
  const clients: RawMcpClient[] = [];
  try {
    for (let i = 0; i < SUSPENDED; i++) {
      const client = new RawMcpClient(`http://127.0.0.1:${gateway.port}/${target.route}`);
      clients.push(client);
      await client.initialize();
      for (const call of target.state!) await callOk(client, target, call);
      const deadline = Date.now() + 30_000;
      while (stats().suspended < i + 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      const sandbox = stats().sandboxes.filter((s) => s.state === "suspended").at(-1);
      if (!sandbox) throw new Error("the session was not suspended within 30 s");
      sizes.push((await stat(join(config.cacheDir, "suspended", stats().server, `${sandbox.id}.mig.gz`))).size);
      progress(`suspended session ${i + 1}/${SUSPENDED}: ${(sizes.at(-1)! / 1024).toFixed(0)} KiB`);
    }
  } finally {
    await Promise.allSettled(clients.map((c) => c.close()));
    await gateway.close();
  }
  return sizes;
}

const rows: string[][] = [];
const diskRows: string[][] = [];
for (const name of NAMES) {
  const target = TARGETS[name]!;
  progress(`${name}: cold boots`);
  const cold = await coldBoots(target);
  progress(`${name}: warm pool, ${SESSIONS} sessions`);
  const warmPool = await sessions(target, 1);
  progress(`${name}: on demand, ${SESSIONS} sessions`);
  const onDemand = await sessions(target, 0);
  const running = FREEZE_BOTH ? await sessions(target, 1, false) : undefined;
  const coldP50 = percentile(cold, 50);
  const row = (mode: string, s: SessionSample[]) => {
    const first = s.map((x) => x.first);
    const next = s.map((x) => x.next);
    return [
      name,
      mode,
      String(s.length),
      fmtMs(percentile(first, 50)),
      fmtMs(percentile(first, 95)),
      fmtMs(percentile(next, 50)),
      `${(coldP50 / percentile(first, 50)).toFixed(0)}x`,
    ];
  };
  rows.push(
    [name, "cold boot to first tools/call", String(cold.length), fmtMs(coldP50), fmtMs(percentile(cold, 95)), "-", "1x"],
    row("session start, warm pool", warmPool),
    row("session start, resume on demand", onDemand),
    ...(running ? [row("session start, warm pool not frozen (before)", running)] : []),
  );
  if (target.state && SUSPENDED > 0) {
    progress(`${name}: disk per suspended session, ${SUSPENDED} sessions`);
    const sizes = await suspendedBytes(target);
    const kib = (n: number) => `${(n / 1024).toFixed(0)} KiB`;
    diskRows.push([name, target.state.map((c) => c.name).join(", "), String(sizes.length), kib(percentile(sizes, 50)), kib(Math.max(...sizes))]);
  }
}
console.log(`\nbench/resume — ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ${cpus()[0]?.model ?? "cpu"}`);
console.log(table(["target", "mode", "n", "first result p50", "first result p95", "next call p50", "cold ÷ first (p50)"], rows));
if (diskRows.length) console.log("\n" + table(["target", "session state (calls)", "n", "suspended on disk p50", "max"], diskRows));
