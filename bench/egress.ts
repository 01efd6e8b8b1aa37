/**
 * bench/egress: what the egress path costs, side by side in one run.
 *  1. One HTTP GET (a few hundred bytes, keep-alive and a new connection each time) to a server on the
 *     host, made from: the host itself; inside a guest to a server process in that same guest (what
 *     emulation costs on its own); inside a guest to the host through the egress (DNS, the agent's
 *     listener, the HTTP/2 link over virtio-serial, the gateway's policy check and its connection).
 *  2. tools/call `query` of the unmodified server-postgres against a real PostgreSQL: in a guest through
 *     mcpvisor and its egress, and the same package run on the host over stdio, 1 and 4 clients.
 * Usage: npm run bench:egress [-- --requests 200 --calls 200]
 */
import { mkdir, writeFile } from "node:fs/promises";
import { createServer as createHttpServer } from "node:http";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { connect, startReadyGateway } from "../test/helpers.js";
import { scratchDir } from "../test/scratch-dir.js";
import { startPostgres } from "../test/services/postgres.js";
import { fmtMs, percentile, table } from "./stats.js";

const { values } = parseArgs({ options: { requests: { type: "string", default: "200" }, calls: { type: "string", default: "200" } } });
const REQUESTS = Number(values.requests);
const CALLS = Number(values.calls);
const progress = (line: string) => process.stderr.write(`[bench] ${line}\n`);

/** A module snippet timing REQUESTS sequential GETs of `url`; prints the latencies (ms) as JSON. */
function getLoop(url: string, keepAlive: boolean, serveLocally: boolean): string {
  return `
import http from "node:http";
${serveLocally ? `
// The local server is a process of its own, as the gateway is for egress: the same hand-offs between
// processes on the guest's one vCPU, which under TCG are much of what a request costs.
const { spawn } = await import("node:child_process");
const local = spawn(process.execPath, ["-e", 'require("http").createServer((q, s) => s.end("x".repeat(256))).listen(8099, "127.0.0.1", () => console.log("ready"))']);
await new Promise((r) => local.stdout.once("data", r));` : ""}
const agent = new http.Agent({ keepAlive: ${keepAlive}, maxSockets: 1 });
const get = () => new Promise((res, rej) => http.get(${JSON.stringify(url)}, { agent }, (r) => { r.resume(); r.on("end", res); }).on("error", rej));
for (let i = 0; i < 10; i++) await get();
const times = [];
for (let i = 0; i < ${REQUESTS}; i++) { const t0 = performance.now(); await get(); times.push(performance.now() - t0); }
agent.destroy();
${serveLocally ? "local.kill();" : ""}
console.log(JSON.stringify(times));`;
}

async function runOnHost(code: string): Promise<number[]> {
  const { execFile } = await import("node:child_process");
  return new Promise((resolve, reject) =>
    execFile(process.execPath, ["--input-type=module", "-e", code], { maxBuffer: 16 * 1024 * 1024 }, (err, stdout) => (err ? reject(err) : resolve(JSON.parse(stdout) as number[]))),
  );
}

async function runInGuest(client: Client, code: string): Promise<number[]> {
  const result = (await client.callTool({ name: "run_js", arguments: { code, timeoutMs: 120_000 } }, undefined, { timeout: 180_000 })) as CallToolResult;
  const out = result.structuredContent as { stdout: string; stderr: string; exitCode: number };
  if (out.exitCode !== 0) throw new Error(`guest snippet failed: ${out.stderr}`);
  return JSON.parse(out.stdout) as number[];
}

async function callsPerSecond(clients: Client[], sql: string): Promise<{ rate: number; p50: number; p99: number }> {
  const times: number[] = [];
  const perClient = Math.ceil(CALLS / clients.length);
  const t0 = performance.now();
  await Promise.all(
    clients.map(async (client) => {
      for (let i = 0; i < perClient; i++) {
        const s = performance.now();
        const result = (await client.callTool({ name: "query", arguments: { sql } })) as CallToolResult;
        if (result.isError) throw new Error(JSON.stringify(result));
        times.push(performance.now() - s);
      }
    }),
  );
  return { rate: times.length / ((performance.now() - t0) / 1000), p50: percentile(times, 50), p99: percentile(times, 99) };
}

async function main(): Promise<void> {
  const pg = await startPostgres();
  await pg.query("drop table if exists bench_rows; create table bench_rows (id int, label text); insert into bench_rows select g, 'row ' || g from generate_series(1, 20) g");
  const upstream = createHttpServer((_req, res) => res.end("x".repeat(256)));
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
  const httpPort = (upstream.address() as { port: number }).port;

  const dir = await scratchDir("mcpv-bench-egress");
  await installHostPostgresServer(dir);
  const serversDir = join(dir, "servers");
  await mkdir(serversDir);
  const pgArgs = ["node_modules/@modelcontextprotocol/server-postgres/dist/index.js", pg.url("host.internal")];
  await writeFile(join(serversDir, "postgres.json"), JSON.stringify({
    name: "postgres",
    source: { kind: "npm", package: "@modelcontextprotocol/server-postgres", version: "0.6.2" },
    command: "node",
    args: pgArgs,
    network: { allow: [`host.internal:${pg.port}`] },
    pool: { prestarted: 2, warm: 4 },
  }));
  await writeFile(join(serversDir, "probe.json"), JSON.stringify({
    name: "probe",
    source: { kind: "bundle", entry: "servers/exec/server.ts" },
    command: "node",
    args: ["server.mjs"],
    timeouts: { callMs: 180_000 },
    network: { allow: [`host.internal:${httpPort}`] },
    pool: { prestarted: 1, warm: 0 },
  }));
  progress("starting the gateway (templates build on first run)");
  const gateway = await startReadyGateway({ serversDir, maxVms: 16 });
  const rows: string[][] = [];
  try {
    const probe = await connect(gateway.url("probe"));
    for (const keepAlive of [true, false]) {
      const what = keepAlive ? "keep-alive" : "new connection";
      progress(`HTTP GET, ${what}: host`);
      const host = await runOnHost(getLoop(`http://127.0.0.1:${httpPort}/`, keepAlive, false));
      progress(`HTTP GET, ${what}: guest loopback`);
      const local = await runInGuest(probe, getLoop("http://127.0.0.1:8099/", keepAlive, true));
      progress(`HTTP GET, ${what}: guest through egress`);
      const egress = await runInGuest(probe, getLoop(`http://host.internal:${httpPort}/`, keepAlive, false));
      for (const [name, samples] of [["host -> host", host], ["guest -> guest (another process)", local], ["guest -> host via egress", egress]] as const) {
        rows.push([what, name, fmtMs(percentile(samples, 50)), fmtMs(percentile(samples, 99)), `${(percentile(samples, 50) / percentile(host, 50)).toFixed(1)}x`]);
      }
    }
    await probe.close();
    console.log(`\n## Egress: one HTTP GET (${REQUESTS} sequential, 256-byte body), ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, TCG\n`);
    console.log(table(["connection", "from -> to", "p50", "p99", "p50 vs host"], rows));

    const sql = "select id, label from bench_rows order by id";
    const pgRows: string[][] = [];
    for (const n of [1, 4]) {
      progress(`postgres query, ${n} client(s): mcpvisor`);
      const clients = await Promise.all(Array.from({ length: n }, () => connect(gateway.url("postgres"))));
      await callsPerSecond(clients, sql); // first calls open the pool's connection in each clone
      const guest = await callsPerSecond(clients, sql);
      await Promise.all(clients.map((c) => c.close()));
      progress(`postgres query, ${n} client(s): host stdio`);
      const hostClients = await Promise.all(
        Array.from({ length: n }, async () => {
          const client = new Client({ name: "bench", version: "0" });
          await client.connect(new StdioClientTransport({ command: process.execPath, args: [join(dir, "host-pg", pgArgs[0]!), pg.url()] }));
          return client;
        }),
      ).catch(async (err: Error) => {
        throw new Error(`host server-postgres: ${err.message}`);
      });
      await callsPerSecond(hostClients, sql);
      const host = await callsPerSecond(hostClients, sql);
      await Promise.all(hostClients.map((c) => c.close()));
      pgRows.push([String(n), "mcpvisor (guest, egress)", guest.rate.toFixed(0), fmtMs(guest.p50), fmtMs(guest.p99), (guest.rate / host.rate).toFixed(2)]);
      pgRows.push([String(n), "host, stdio", host.rate.toFixed(0), fmtMs(host.p50), fmtMs(host.p99), "1.00"]);
    }
    console.log(`\n## server-postgres \`query\` (${CALLS} calls, 20 rows each)\n`);
    console.log(table(["clients", "where", "calls/s", "p50", "p99", "vs host"], pgRows));
  } finally {
    await gateway.close();
    upstream.close();
  }
}

/** The same package the guest runs, installed on the host for the stdio comparison. */
async function installHostPostgresServer(dir: string): Promise<void> {
  const { execFileSync } = await import("node:child_process");
  await mkdir(join(dir, "host-pg"), { recursive: true });
  execFileSync("npm", ["install", "--prefix", join(dir, "host-pg"), "--no-audit", "--no-fund", "--loglevel=error", "@modelcontextprotocol/server-postgres@0.6.2"], { stdio: "inherit" });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
