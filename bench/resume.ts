/**
 * bench/resume: how much faster a session starts from a snapshot than from a cold boot, per server in the
 * same run: server-memory (node) and mcp-server-time (Python, from PyPI).
 *   cold:       QEMU start -> kernel boot -> server start -> initialize -> first tools/call answered
 *   warm pool:  session start (initialize) -> first tools/call answered, a clone resumed and warmed ahead
 *   on demand:  the same with no warm clone: a prestarted VMM loads the snapshot for this session
 * Sessions use a minimal HTTP client (raw-mcp-client.ts), so the figures are the gateway's and the VM's.
 * Usage: npm run bench:resume [-- --sessions 20 --cold 3 --servers memory,time]
 */
import { mkdtemp, rm } from "node:fs/promises";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { loadManifests } from "../src/config/load.js";
import { sandboxUnits } from "../src/config/sandbox-unit.js";
import { serverChannel, type Vm } from "../src/sandbox/driver.js";
import { REPO_ROOT, startGateway } from "../src/main.js";
import { guestNotify, guestRequest } from "../src/sandbox/guest-rpc.js";
import { prepareGuests } from "../src/sandbox/guest-images.js";
import { QemuDriver } from "../src/sandbox/qemu/qemu-driver.js";
import { createLogger } from "../src/telemetry/log.js";
import { testConfig } from "../test/helpers.js";
import { RawMcpClient } from "./raw-mcp-client.js";
import { fmtMs, percentile, table } from "./stats.js";

const { values } = parseArgs({
  options: { sessions: { type: "string", default: "20" }, cold: { type: "string", default: "3" }, servers: { type: "string", default: "memory,time" } },
});
const SESSIONS = Number(values.sessions);
const COLD = Number(values.cold);

interface ToolCall {
  name: string;
  arguments: Record<string, unknown>;
}
/** Per server: the first call of a session (what is timed from its start), and a next one. */
const CALLS: Record<string, { first: ToolCall; next: ToolCall }> = {
  memory: { first: { name: "read_graph", arguments: {} }, next: { name: "search_nodes", arguments: { query: "x" } } },
  time: {
    first: { name: "get_current_time", arguments: { timezone: "UTC" } },
    next: { name: "convert_time", arguments: { source_timezone: "UTC", time: "12:00", target_timezone: "Asia/Tokyo" } },
  },
};
const SERVERS = values.servers.split(",").filter(Boolean);
for (const server of SERVERS) if (!CALLS[server]) throw new Error(`no calls defined for server '${server}' (have: ${Object.keys(CALLS).join(", ")})`);
const log = createLogger("silent");
const progress = (line: string) => process.stderr.write(`[bench] ${line}\n`);

async function coldBoots(SERVER: string): Promise<number[]> {
  const config = testConfig();
  const driver = new QemuDriver({ runDir: config.runDir });
  const units = sandboxUnits(await loadManifests(join(REPO_ROOT, "servers"), [SERVER]), join(REPO_ROOT, "servers"));
  const plan = await prepareGuests(units, {
    build: { cacheDir: config.cacheDir, repoRoot: REPO_ROOT, progress },
    driver,
    accel: config.accel,
    runDir: config.runDir,
    log,
  });
  const spec = await plan.specs.get(units[0]!.name)!;
  const channel = (vm: Vm) => serverChannel(vm.channel, SERVER);
  progress(`accelerator: ${plan.accel.accel} (${plan.accel.reason})`);
  const times: number[] = [];
  for (let i = 0; i < COLD; i++) {
    const dir = await mkdtemp(join(tmpdir(), "mcpv-cold-"));
    const t0 = performance.now();
    const vm = await driver.boot(spec, join(dir, "ram"), 120_000);
    await guestRequest(channel(vm), "initialize", {
      protocolVersion: "2025-11-25",
      capabilities: {},
      clientInfo: { name: "bench", version: "0" },
    }, 60_000);
    guestNotify(channel(vm), "notifications/initialized");
    await guestRequest(channel(vm), "tools/call", { ...CALLS[SERVER]!.first }, 60_000);
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

async function sessions(SERVER: string, warm: number): Promise<SessionSample[]> {
  const config = testConfig({ servers: [SERVER] });
  const gateway = await startGateway(config, log, () => undefined, { pool: { prestarted: 2, warm } });
  await gateway.settled;
  const url = `http://127.0.0.1:${gateway.port}/servers/${SERVER}/mcp`;
  const samples: SessionSample[] = [];
  const connectTimes: number[] = [];
  const poolFull = () => {
    const s = gateway.pool.stats().find((p) => p.server === SERVER)!;
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
      const first = (await client.request("tools/call", { ...CALLS[SERVER]!.first })) as CallToolResult;
      const t1 = performance.now();
      await client.request("tools/call", { ...CALLS[SERVER]!.next });
      const t2 = performance.now();
      if (first.isError) throw new Error(`${CALLS[SERVER]!.first.name} failed`);
      samples.push({ first: t1 - t0, next: t2 - t1 });
      await client.close();
    }
  } finally {
    await gateway.close();
  }
  progress(`  of which initialize (answered by the gateway): p50 ${fmtMs(percentile(connectTimes, 50))}`);
  return samples;
}

const rows: string[][] = [];
for (const server of SERVERS) {
  progress(`${server}: cold boots`);
  const cold = await coldBoots(server);
  progress(`${server}: warm pool, ${SESSIONS} sessions`);
  const warmPool = await sessions(server, 1);
  progress(`${server}: on demand, ${SESSIONS} sessions`);
  const onDemand = await sessions(server, 0);
  const coldP50 = percentile(cold, 50);
  const row = (name: string, s: SessionSample[]) => {
    const first = s.map((x) => x.first);
    const next = s.map((x) => x.next);
    return [
      server,
      name,
      String(s.length),
      fmtMs(percentile(first, 50)),
      fmtMs(percentile(first, 95)),
      fmtMs(percentile(next, 50)),
      `${(coldP50 / percentile(first, 50)).toFixed(0)}x`,
    ];
  };
  rows.push(
    [server, "cold boot to first tools/call", String(cold.length), fmtMs(coldP50), fmtMs(percentile(cold, 95)), "-", "1x"],
    row("session start, warm pool", warmPool),
    row("session start, resume on demand", onDemand),
  );
}
console.log(`\nbench/resume — ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ${cpus()[0]?.model ?? "cpu"}`);
console.log(table(["server", "mode", "n", "first result p50", "first result p95", "next call p50", "cold ÷ first (p50)"], rows));
