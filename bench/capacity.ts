/**
 * bench/capacity: what idle sessions cost on this machine, for server-memory sessions that each stored an
 * entity. In one run:
 *   0. I sessions (default 16) idle after one call, with the pool (2 prestarted, 1 warm): host CPU of every
 *      QEMU process and of the gateway over S seconds, without and with freezing idle guests.
 *   1. N sessions (default 1000) each store an entity, then idle and are suspended to disk; suspend time,
 *      disk per suspended session, then resume-from-suspend time as every one of them reads its graph back
 *      (each must see exactly its own entity).
 *   2. M sessions (default 50) active at once: host RAM per clone (proportional set size of its QEMU,
 *      so template pages shared through the page cache are counted once across clones), and every one
 *      answers a call correctly.
 *   0b. B sessions (default 20) opened one after another, each closed after its first call: first call
 *      p50/p95 with a standing warm pool of 1, 4 and B frozen clones (2 prestarted QEMUs each time).
 * Usage: npm run bench:capacity [-- --idle 16 --idle-seconds 30 --burst 20 --suspended 1000 --active 50 --concurrency 4]
 *   (`--suspended 0 --active 0` measures only the idle CPU)
 */
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { cpus, totalmem } from "node:os";
import { parseArgs } from "node:util";
import { startGateway } from "../src/main.js";
import type { SandboxResumeRecord, SandboxSuspendRecord } from "../src/telemetry/events.js";
import { createLogger } from "../src/telemetry/log.js";
import { runningVmms, serversDirWith, testConfig } from "../test/helpers.js";
import { RawMcpClient } from "./raw-mcp-client.js";
import { fmtMs, percentile, table } from "./stats.js";

const { values } = parseArgs({
  options: {
    suspended: { type: "string", default: "1000" },
    active: { type: "string", default: "50" },
    concurrency: { type: "string", default: "4" },
    idle: { type: "string", default: "16" },
    burst: { type: "string", default: "20" },
    "idle-seconds": { type: "string", default: "30" },
  },
});
const IDLE = Number(values.idle);
const BURST = Number(values.burst);
const IDLE_SECONDS = Number(values["idle-seconds"]);
const SUSPENDED = Number(values.suspended);
const ACTIVE = Number(values.active);
const CONCURRENCY = Number(values.concurrency);
const progress = (line: string) => process.stderr.write(`[bench] ${line}\n`);

/** Runs `work` for 0..n-1 with at most `limit` at once. */
async function forEach(n: number, limit: number, work: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, n) }, async () => {
      while (next < n) await work(next++);
    }),
  );
}

interface Graph {
  structuredContent: { entities: { name: string }[] };
}

async function entities(client: RawMcpClient): Promise<string[]> {
  return ((await client.request("tools/call", { name: "read_graph", arguments: {} })) as unknown as Graph).structuredContent.entities.map((e) => e.name);
}

async function pss(pid: number): Promise<number> {
  const rollup = await readFile(`/proc/${pid}/smaps_rollup`, "utf8");
  return Number(/^Pss:\s+(\d+) kB/m.exec(rollup)![1]) * 1024;
}

const suspends: SandboxSuspendRecord[] = [];
const resumes: SandboxResumeRecord[] = [];
/** CPU seconds (user + system) a process has used so far. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in USER_HZ (100 on Linux)
  } catch {
    return 0; // ended meanwhile
  }
}

/**
 * Phase 0: `IDLE` sessions each make one call and then sit idle with the pool beside them; the host CPU
 * of every QEMU process and of the gateway over `IDLE_SECONDS`, in percent of one core.
 */
async function idleCpu(freezeWhenIdle: boolean): Promise<{ vms: number; qemuPct: number; gatewayPct: number; frozen: number }> {
  const serversDir = await serversDirWith({ memory: (m) => ({ guest: { ...m.guest, freezeWhenIdle }, timeouts: { ...m.timeouts, idleSuspendMs: 0 } }) });
  const gateway = await startGateway(testConfig({ servers: ["memory"], serversDir }), createLogger("silent"), () => undefined, { pool: { prestarted: 2, warm: 1 } });
  await gateway.settled;
  const url = `http://127.0.0.1:${gateway.port}/servers/memory/mcp`;
  const clients: RawMcpClient[] = [];
  try {
    await forEach(IDLE, 4, async () => {
      const client = new RawMcpClient(url);
      clients.push(client);
      await client.initialize();
      await client.request("tools/call", { name: "read_graph", arguments: {} });
    });
    const pool = () => gateway.pool.stats()[0]!;
    while (pool().warm < 1 || pool().prestarted < 2) await new Promise((r) => setTimeout(r, 100));
    await new Promise((r) => setTimeout(r, 2_000)); // pool refills and freezes settle
    const vms = runningVmms();
    const before = vms.map(cpuSeconds);
    const gatewayBefore = process.cpuUsage();
    await new Promise((r) => setTimeout(r, IDLE_SECONDS * 1000));
    const qemu = vms.reduce((sum, pid, i) => sum + cpuSeconds(pid) - before[i]!, 0);
    const own = process.cpuUsage(gatewayBefore);
    const stats = pool();
    return {
      vms: vms.length,
      qemuPct: (qemu / IDLE_SECONDS) * 100,
      gatewayPct: ((own.user + own.system) / 1e6 / IDLE_SECONDS) * 100,
      frozen: stats.warmFrozen + stats.sandboxes.filter((s) => s.frozen).length,
    };
  } finally {
    await Promise.allSettled(clients.map((c) => c.close()));
    await gateway.close();
  }
}

if (IDLE > 0) {
  const rows: string[][] = [];
  for (const freeze of [false, true]) {
    progress(`idle: ${IDLE} sessions and the pool, ${IDLE_SECONDS} s, freezeWhenIdle ${freeze}`);
    const r = await idleCpu(freeze);
    rows.push([freeze ? "frozen when idle" : "running when idle (before)", String(r.vms), String(r.frozen), `${r.qemuPct.toFixed(2)} %`, `${r.gatewayPct.toFixed(2)} %`, `${(r.qemuPct + r.gatewayPct).toFixed(2)} %`]);
  }
  console.log(`\nbench/capacity, idle CPU — ${IDLE} idle server-memory sessions + pool (2 prestarted, 1 warm), ${IDLE_SECONDS} s, ${cpus().length} cores, ${cpus()[0]?.model ?? "cpu"}`);
  console.log(table(["idle guests", "QEMU processes", "frozen", "QEMU CPU (% of one core)", "gateway CPU", "total"], rows));
}
/**
 * Phase 0b: `BURST` sessions one after another from a full pool of `warm` clones; each one's time to its
 * first result. Then, once the pool has refilled to what the first burst grew it to, a second burst.
 */
async function burstOf(warm: number): Promise<{ first: number[]; second: number[]; grownTo: number }> {
  const gateway = await startGateway(testConfig({ servers: ["memory"], maxVms: warm + 16 }), createLogger("silent"), () => undefined, { pool: { prestarted: 2, warm } });
  await gateway.settled;
  const url = `http://127.0.0.1:${gateway.port}/servers/memory/mcp`;
  const pool = () => gateway.pool.stats()[0]!;
  try {
    const burst = async () => {
      const times: number[] = [];
      for (let i = 0; i < BURST; i++) {
        const t0 = performance.now();
        const client = new RawMcpClient(url);
        await client.initialize();
        await client.request("tools/call", { name: "read_graph", arguments: {} });
        times.push(performance.now() - t0);
        await client.close();
      }
      return times;
    };
    // The VM budget may hold a grown pool below its target: then the second burst starts after 60 s.
    const refilled = async (want: number) => {
      const deadline = Date.now() + 60_000;
      while ((pool().warmFrozen < want || pool().prestarted < 2) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    };
    await refilled(warm);
    const first = await burst();
    const grownTo = pool().warmTarget;
    await refilled(grownTo);
    return { first, second: await burst(), grownTo };
  } finally {
    await gateway.close();
  }
}

if (BURST > 0) {
  const rows: string[][] = [];
  for (const warm of [1, 4, BURST]) {
    progress(`burst: ${BURST} sessions one after another, ${warm} warm clones waiting`);
    const { first, second, grownTo } = await burstOf(warm);
    rows.push([`${warm}, first burst`, String(first.length), fmtMs(percentile(first, 50)), fmtMs(percentile(first, 95))]);
    rows.push([`${grownTo} (grown by the first), second burst`, String(second.length), fmtMs(percentile(second, 50)), fmtMs(percentile(second, 95))]);
  }
  console.log(`\nbench/capacity, a burst — ${BURST} server-memory sessions opened one after another (each closed after its first call), 2 prestarted QEMUs`);
  console.log(table(["warm clones waiting (frozen)", "sessions", "first result p50", "p95"], rows));
}
if (SUSPENDED === 0 && ACTIVE === 0) process.exit(0);

const onSuspend = (r: unknown) => void suspends.push(r as SandboxSuspendRecord);
const onResume = (r: unknown) => void resumes.push(r as SandboxResumeRecord);
subscribe("mcpvisor:sandbox:suspend", onSuspend);
subscribe("mcpvisor:sandbox:resume", onResume);

// Phase 1: many sessions, suspended after 200 ms idle.
const quickSuspend = await serversDirWith({ memory: (m) => ({ timeouts: { ...m.timeouts, idleSuspendMs: 200 } }) });
let gateway = await startGateway(testConfig({ servers: ["memory"], serversDir: quickSuspend, maxVms: 16 }), createLogger("silent"), () => undefined, {
  pool: { prestarted: CONCURRENCY, warm: 0 },
});
await gateway.settled;
let url = `http://127.0.0.1:${gateway.port}/servers/memory/mcp`;
const sessions: RawMcpClient[] = [];
const t0 = performance.now();
await forEach(SUSPENDED, CONCURRENCY, async (i) => {
  const client = new RawMcpClient(url);
  await client.initialize();
  await client.request("tools/call", { name: "create_entities", arguments: { entities: [{ name: `s${i}`, entityType: "session", observations: [`made by session ${i}`] }] } });
  sessions[i] = client;
  if ((i + 1) % 100 === 0) progress(`${i + 1}/${SUSPENDED} sessions created`);
});
const stats = () => gateway.pool.stats().find((s) => s.server === "memory")!;
while (stats().suspended < SUSPENDED) await new Promise((r) => setTimeout(r, 100));
progress(`${SUSPENDED} sessions suspended in ${((performance.now() - t0) / 1000).toFixed(0)} s; QEMU processes now: ${stats().prestarted} prestarted, 0 for sessions`);
const heldSuspended = stats().suspended;
const resumeStart = resumes.length;
let correct = 0;
await forEach(SUSPENDED, CONCURRENCY, async (i) => {
  if (JSON.stringify(await entities(sessions[i]!)) === JSON.stringify([`s${i}`])) correct++;
  await sessions[i]!.close();
  if ((i + 1) % 100 === 0) progress(`${i + 1}/${SUSPENDED} sessions resumed and checked`);
});
const fromSuspended = resumes.slice(resumeStart).filter((r) => r.from === "suspended").map((r) => r.durationMs);
await gateway.close();

// Phase 2: many sessions active at once.
const noSuspend = await serversDirWith({ memory: (m) => ({ timeouts: { ...m.timeouts, idleSuspendMs: 0 } }) });
gateway = await startGateway(testConfig({ servers: ["memory"], serversDir: noSuspend, maxVms: ACTIVE + 8 }), createLogger("silent"), () => undefined, {
  pool: { prestarted: CONCURRENCY, warm: 0 },
});
await gateway.settled;
url = `http://127.0.0.1:${gateway.port}/servers/memory/mcp`;
const active: RawMcpClient[] = [];
await forEach(ACTIVE, CONCURRENCY, async (i) => {
  const client = new RawMcpClient(url);
  await client.initialize();
  await client.request("tools/call", { name: "create_entities", arguments: { entities: [{ name: `a${i}`, entityType: "session", observations: ["active"] }] } });
  active[i] = client;
});
const pids = stats().sandboxes.map((s) => s.pid).filter((p): p is number => p !== undefined);
const pssBytes = await Promise.all(pids.map(pss));
let activeCorrect = 0;
await Promise.all(active.map(async (client, i) => {
  if (JSON.stringify(await entities(client)) === JSON.stringify([`a${i}`])) activeCorrect++;
}));
await Promise.all(active.map((c) => c.close()));
await gateway.close();
unsubscribe("mcpvisor:sandbox:suspend", onSuspend);
unsubscribe("mcpvisor:sandbox:resume", onResume);

const mib = (b: number) => `${(b / 1048576).toFixed(2)} MiB`;
const suspendMs = suspends.map((s) => s.durationMs);
const bytes = suspends.map((s) => s.bytes);
console.log(`\nbench/capacity — server-memory, ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ${cpus()[0]?.model ?? "cpu"}`);
console.log(
  table(
    ["measure", "n", "p50", "p95", "max"],
    [
      ["suspend to disk", String(suspendMs.length), fmtMs(percentile(suspendMs, 50)), fmtMs(percentile(suspendMs, 95)), fmtMs(Math.max(...suspendMs))],
      ["resume from suspended, to running", String(fromSuspended.length), fmtMs(percentile(fromSuspended, 50)), fmtMs(percentile(fromSuspended, 95)), fmtMs(Math.max(...fromSuspended))],
      ["disk per suspended session", String(bytes.length), mib(percentile(bytes, 50)), mib(percentile(bytes, 95)), mib(Math.max(...bytes))],
      ["host RAM per active clone (PSS)", String(pssBytes.length), mib(percentile(pssBytes, 50)), mib(percentile(pssBytes, 95)), mib(Math.max(...pssBytes))],
    ],
  ),
);
console.log(
  table(
    ["held at once", "sessions", "answered correctly afterwards"],
    [
      ["suspended (no VM, no guest RAM)", String(heldSuspended), `${correct}/${SUSPENDED}`],
      ["active (a VM each)", String(pids.length), `${activeCorrect}/${ACTIVE}`],
    ],
  ),
);
process.exit(correct === SUSPENDED && activeCorrect === ACTIVE ? 0 : 1);
