/**
 * bench/cluster: several gateway nodes behind haproxy, side by side in one run (issue 20).
 *  1. calls/s and p50/p99 of `tools/call` (server-memory's read_graph) from concurrent sessions through
 *     haproxy in round robin with no stickiness: haproxy in front of 1 node, and in front of 3 nodes.
 *     Every session lives on one node; through 3 nodes two requests in three are forwarded to it.
 *     Rounds alternate (1, 3, 1, 3, ...) so that the machine's noise falls on both alike.
 *  2. One call answered by the node that runs its session (local) vs one sent to another node that
 *     forwards it (one extra hop), in paired rounds.
 * Everything is real: Redis, haproxy, three gateway processes, microVMs. On this 2-core machine the
 * nodes share the same two cores, so more nodes cannot add capacity here: the table shows what the
 * cluster machinery costs, not how a cluster of machines scales.
 * Usage: npm run bench:cluster [-- --clients 6 --seconds 15 --rounds 2 --pairs 200]
 */
import { cpus } from "node:os";
import { parseArgs } from "node:util";
import { tenantsFileWith } from "../test/auth-helpers.js";
import { serversDirWith } from "../test/helpers.js";
import { clusterNodes, type GatewayNode } from "../test/services/gateway-cluster.js";
import { startHaproxy, type TestHaproxy } from "../test/services/haproxy.js";
import { startRedis } from "../test/services/redis.js";
import { RawMcpClient } from "./raw-mcp-client.js";
import { fmtMs, percentile, table } from "./stats.js";

const { values } = parseArgs({
  options: { clients: { type: "string", default: "6" }, seconds: { type: "string", default: "15" }, rounds: { type: "string", default: "2" }, pairs: { type: "string", default: "200" } },
});
const CLIENTS = Number(values.clients);
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const PAIRS = Number(values.pairs);
const progress = (line: string) => process.stderr.write(`[bench] ${line}\n`);
const READ = { name: "read_graph", arguments: {} };

async function timed(client: RawMcpClient): Promise<number> {
  const t0 = performance.now();
  await client.request("tools/call", READ);
  return performance.now() - t0;
}

/** CLIENTS sessions through `lb`, each calling as fast as it is answered for SECONDS. */
async function load(lb: TestHaproxy, key: string): Promise<{ calls: number; seconds: number; latencies: number[] }> {
  const url = `http://127.0.0.1:${lb.port}/servers/memory/mcp`;
  const clients = await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      const client = new RawMcpClient(url, key);
      await client.initialize();
      await client.request("tools/call", READ); // the session's sandbox is resumed: not measured
      return client;
    }),
  );
  const latencies: number[] = [];
  const t0 = performance.now();
  const end = t0 + SECONDS * 1000;
  await Promise.all(clients.map(async (client) => {
    while (performance.now() < end) latencies.push(await timed(client));
  }));
  const seconds = (performance.now() - t0) / 1000;
  await Promise.all(clients.map((c) => c.close()));
  return { calls: latencies.length, seconds, latencies };
}

const redis = await startRedis();
const serversDir = await serversDirWith({ memory: (m) => ({ pool: { prestarted: 1, warm: CLIENTS } }) });
const tenants = await tenantsFileWith({ tenants: { bench: { limits: { requestsPerSecond: 100_000, burst: 100_000, maxSessions: 1_000, maxSandboxes: 1_000 } }, ops: { admin: true } } });
const key = tenants.keys.bench!;
const nodes: GatewayNode[] = await clusterNodes({ redis, serversDir, tenantsFile: tenants.path, adminKey: tenants.keys.ops!, nodes: 3, leaseMs: 10_000 });
const balancers: TestHaproxy[] = [];
try {
  progress("starting 3 gateway nodes (the first builds the template for all)");
  await nodes[0]!.start();
  await Promise.all(nodes.slice(1).map((n) => n.start()));
  const one = await startHaproxy([nodes[0]!.port]);
  const three = await startHaproxy(nodes.map((n) => n.port));
  balancers.push(one, three);

  const results: Record<string, { calls: number; seconds: number; latencies: number[] }> = { "1 node": { calls: 0, seconds: 0, latencies: [] }, "3 nodes": { calls: 0, seconds: 0, latencies: [] } };
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [label, lb] of [["1 node", one], ["3 nodes", three]] as const) {
      progress(`round ${round}: ${CLIENTS} sessions through haproxy to ${label}, ${SECONDS} s`);
      const r = await load(lb, key);
      const total = results[label]!;
      total.calls += r.calls;
      total.seconds += r.seconds;
      total.latencies.push(...r.latencies);
    }
  }

  progress(`forwarded vs local: ${PAIRS} paired calls`);
  const local = new RawMcpClient(nodes[0]!.url(), key);
  await local.initialize();
  await local.request("tools/call", READ);
  const forwarded = new RawMcpClient(nodes[1]!.url(), key);
  forwarded.sessionId = local.sessionId;
  forwarded.nextId = 1_000_000;
  for (let i = 0; i < 20; i++) await timed(forwarded); // the nodes' keep-alive connection is open
  const localMs: number[] = [];
  const forwardedMs: number[] = [];
  for (let i = 0; i < PAIRS; i++) {
    if (i % 2 === 0) {
      localMs.push(await timed(local));
      forwardedMs.push(await timed(forwarded));
    } else {
      forwardedMs.push(await timed(forwarded));
      localMs.push(await timed(local));
    }
  }
  await local.close();

  const base = results["1 node"]!;
  const rows = Object.entries(results).map(([label, r]) => [
    label,
    String(r.calls),
    (r.calls / r.seconds).toFixed(1),
    ((r.calls / r.seconds) / (base.calls / base.seconds)).toFixed(2),
    fmtMs(percentile(r.latencies, 50)),
    fmtMs(percentile(r.latencies, 99)),
  ]);
  console.log(`\n${CLIENTS} concurrent sessions through haproxy (round robin, no stickiness), ${ROUNDS} alternating rounds of ${SECONDS} s; ${cpus().length} CPUs shared by every node`);
  console.log(table(["behind haproxy", "calls", "calls/s", "vs 1 node", "p50 ms", "p99 ms"], rows));
  const p = (xs: number[], q: number) => percentile(xs, q);
  console.log(`\none call, the node that runs the session vs another node forwarding to it (${PAIRS} paired calls)`);
  console.log(
    table(
      ["path", "p50 ms", "p99 ms", "p50 vs local"],
      [
        ["local (owner)", fmtMs(p(localMs, 50)), fmtMs(p(localMs, 99)), "1.00"],
        ["forwarded (one hop)", fmtMs(p(forwardedMs, 50)), fmtMs(p(forwardedMs, 99)), (p(forwardedMs, 50) / p(localMs, 50)).toFixed(2)],
      ],
    ),
  );
  console.log(`forwarding adds ${fmtMs(p(forwardedMs, 50) - p(localMs, 50))} at p50`);
} finally {
  for (const lb of balancers) await lb.stop();
  for (const node of nodes) if (node.running) await node.stop("SIGKILL");
  await redis.stop();
}
