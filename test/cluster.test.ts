// Cluster mode for real on one machine (docs/design/cluster.md): a real Redis, a shared folder as the
// store, three gateway processes with caches of their own, and haproxy in round robin with no
// stickiness in front of them. Nodes are killed with SIGKILL, stopped with SIGSTOP and drained with
// SIGTERM; every check reads what the nodes really did (Redis's records, each node's sandboxes, logs).
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { after, before, test } from "node:test";
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from "@modelcontextprotocol/client";
import { RawMcpClient } from "../bench/raw-mcp-client.js";
import { tenantsFileWith } from "./auth-helpers.js";
import { eventually } from "./eventually.js";
import { serversDirWith } from "./helpers.js";
import { clusterNodes, type GatewayNode } from "./services/gateway-cluster.js";
import { startHaproxy, type TestHaproxy } from "./services/haproxy.js";
import { startRedis, type TestRedis } from "./services/redis.js";

const LEASE_MS = 3_000;

let redis: TestRedis;
let haproxy: TestHaproxy;
let nodes: GatewayNode[];
let key: string;
let slowKey: string;
let tightKey: string;
let modernKey: string;
let tenantsPath: string;

before(async () => {
  redis = await startRedis();
  const serversDir = await serversDirWith({
    memory: (m) => ({ timeouts: { ...m.timeouts, idleSuspendMs: 1_500 }, pool: { prestarted: 1, warm: 1 } }),
  });
  const tenants = await tenantsFileWith({
    tenants: { acme: {}, modern: {}, ops: { admin: true }, slow: { limits: { requestsPerSecond: 0.01, burst: 4 } }, tight: { limits: { maxSandboxes: 1, maxStreams: 1 } } },
  });
  ({ acme: key, slow: slowKey, tight: tightKey, modern: modernKey } = tenants.keys as { acme: string; slow: string; tight: string; modern: string });
  tenantsPath = tenants.path;
  nodes = await clusterNodes({ redis, serversDir, tenantsFile: tenants.path, adminKey: tenants.keys.ops!, nodes: 3, leaseMs: LEASE_MS });
  await Promise.all(nodes.map((n) => n.start()));
  haproxy = await startHaproxy(nodes.map((n) => n.port));
});

after(async () => {
  await haproxy?.stop();
  for (const node of nodes ?? []) {
    if (node.running) {
      node.child!.kill("SIGCONT");
      await node.stop("SIGKILL");
    }
  }
  await redis?.stop();
});

const viaLb = () => `http://127.0.0.1:${haproxy.port}/servers/memory/mcp`;
const byId = (id: string) => nodes.find((n) => n.id === id)!;

async function sessionHolding(url: string, entity: string): Promise<RawMcpClient> {
  const client = new RawMcpClient(url, key);
  await client.initialize();
  await client.request("tools/call", { name: "create_entities", arguments: { entities: [{ name: entity, entityType: "t", observations: ["x"] }] } });
  return client;
}

async function entityNames(client: RawMcpClient): Promise<string[]> {
  const result = (await client.request("tools/call", { name: "read_graph", arguments: {} })) as { structuredContent?: { entities: { name: string }[] } };
  return (result.structuredContent?.entities ?? []).map((e) => e.name).filter((n) => n !== "warm-up");
}

const record = (id: string) => redis.client.hgetall(`mcpvisor:session:${id}`);
const totalSandboxes = async () => (await Promise.all(nodes.filter((n) => n.running).map((n) => n.sessionSandboxes()))).reduce((a, b) => a + b, 0);

test("the template is built once for the cluster, by one node", async () => {
  const logs = await Promise.all(nodes.map((n) => n.logText()));
  const builds = logs.map((text) => (text.match(/template memory: cold boot/g) ?? []).length);
  assert.equal(builds.reduce((a, b) => a + b, 0), 1, `template builds per node: ${builds.join(", ")}`);
});

test("through haproxy's round robin every request of a session is served, by one owner with one VM", async () => {
  const client = await sessionHolding(viaLb(), "alpha");
  for (let i = 0; i < 6; i++) assert.deepEqual(await entityNames(client), ["alpha"]);
  const rec = await record(client.sessionId!);
  assert.equal(rec.state, "running");
  assert.ok(["n1", "n2", "n3"].includes(rec.owner!));
  assert.equal(await totalSandboxes(), 1, "one VM in the whole cluster holds the session");
  const forwards = await Promise.all(nodes.map((n) => n.metric('mcpvisor_cluster_events_total{kind="forward",outcome="ok"}')));
  assert.ok(forwards.reduce((a, b) => a + b, 0) >= 4, `requests forwarded to the owner, per node: ${forwards.join(", ")}`);
  await client.close();
});

test("2026-07-28 requests of one principal, spread by round robin, reach its one session on one node", async () => {
  const client = new ModernClient({ name: "cluster-test", version: "0" }, { versionNegotiation: { mode: "auto" } });
  await client.connect(new ModernTransport(new URL(viaLb()), { requestInit: { headers: { authorization: `Bearer ${modernKey}` } } }));
  await client.callTool({ name: "create_entities", arguments: { entities: [{ name: "theta", entityType: "t", observations: ["x"] }] } });
  for (let i = 0; i < 6; i++) {
    const result = (await client.callTool({ name: "read_graph", arguments: {} })) as { structuredContent?: { entities: { name: string }[] } };
    assert.deepEqual(result.structuredContent?.entities.map((e) => e.name).filter((n) => n !== "warm-up"), ["theta"]);
  }
  const ids = (await redis.client.keys("mcpvisor:session:principal-*"));
  assert.equal(ids.length, 1, "one session for the principal in the cluster");
  assert.equal((await redis.client.hgetall(ids[0]!)).state, "running");
  await client.close();
});

test("a suspended session survives kill -9 of the node that ran it, with its state", async () => {
  const client = await sessionHolding(viaLb(), "beta");
  await eventually(async () => (await record(client.sessionId!)).state === "saved", "the idle session to be saved to the store", 30_000);
  const owner = byId((await record(client.sessionId!)).owner!);
  await owner.stop("SIGKILL");
  assert.deepEqual(await entityNames(client), ["beta"], "another node revived it from the shared store");
  assert.notEqual((await record(client.sessionId!)).owner, owner.id);
  await owner.start();
  await client.close();
});

test("a running session on a node killed with SIGKILL answers 404 within the lease time, never older state", async () => {
  const client = await sessionHolding(nodes[0]!.url(), "gamma");
  await entityNames(client); // running on n1
  assert.equal((await record(client.sessionId!)).owner, "n1");
  await nodes[0]!.stop("SIGKILL");
  const started = Date.now();
  client.url = nodes[1]!.url();
  await assert.rejects(entityNames(client), /HTTP 404/);
  assert.ok(Date.now() - started < LEASE_MS + 2_000, `404 after ${Date.now() - started} ms`);
  await nodes[0]!.start();
});

test("a node stopped with SIGSTOP past its lease is fenced when it wakes: its sessions end, nothing it saves is taken", async () => {
  const n2 = nodes[1]!;
  const client = await sessionHolding(n2.url(), "delta");
  assert.equal((await record(client.sessionId!)).owner, "n2");
  assert.equal(await n2.sessionSandboxes(), 1);
  n2.child!.kill("SIGSTOP");
  // Stopped, n2 renews nothing: Redis drops its lease once LEASE_MS has passed.
  await eventually(async () => (await redis.client.exists("mcpvisor:node:n2")) === 0, "n2's lease to run out in Redis", LEASE_MS * 3);
  client.url = nodes[2]!.url();
  await assert.rejects(entityNames(client), /HTTP 404/, "its owner's lease is gone: the session is gone");
  n2.child!.kill("SIGCONT");
  await eventually(async () => (await n2.logText()).includes("node fenced"), "n2 to notice it was fenced", 10_000);
  await eventually(async () => (await n2.sessionSandboxes()) === 0, "n2's session sandboxes to be gone", 10_000);
  assert.deepEqual(await record(client.sessionId!), {}, "nothing n2 did on waking brought the session back");
  await eventually(async () => (await fetch(n2.url("/readyz"))).ok, "n2 to serve again", 10_000);
  assert.equal(await n2.metric('mcpvisor_cluster_events_total{kind="fenced",outcome="fenced"}'), 1);
  await eventually(async () => (await n2.metric("mcpvisor_cluster_lease_held")) === 1, "n2 to hold a lease again (a new epoch)", 10_000);
});

test("two nodes racing to resume one saved session make one VM, and both answers are the session's", async () => {
  const client = await sessionHolding(viaLb(), "epsilon");
  await eventually(async () => (await record(client.sessionId!)).state === "saved", "the session to be saved", 30_000);
  const a = new RawMcpClient(nodes[0]!.url(), key);
  const b = new RawMcpClient(nodes[2]!.url(), key);
  a.sessionId = b.sessionId = client.sessionId;
  b.nextId = 1_000; // one session: its requests' ids must differ, as one client's would
  const [ra, rb] = await Promise.all([entityNames(a), entityNames(b)]);
  assert.deepEqual([ra, rb], [["epsilon"], ["epsilon"]]);
  assert.equal(await totalSandboxes(), 1, "exactly one VM resumed");
  await client.close();
});

test("a tenant's rate limit holds across nodes", async () => {
  const answers: number[] = [];
  for (let i = 0; i < 8; i++) {
    const node = nodes[i % 3]!;
    answers.push((await fetch(node.url("/api/status"), { headers: { authorization: `Bearer ${slowKey}` } })).status);
  }
  assert.deepEqual(answers.filter((s) => s === 200).length, 4, `statuses: ${answers.join(" ")} (burst 4, counted once for the cluster)`);
  assert.ok(answers.slice(4).every((s) => s === 429));
});

test("a tenant's running sandboxes are counted across nodes: a second one elsewhere waits for the first to be suspended", async () => {
  const first = new RawMcpClient(nodes[0]!.url(), tightKey);
  await first.initialize();
  await first.request("tools/call", { name: "read_graph", arguments: {} });
  const second = new RawMcpClient(nodes[1]!.url(), tightKey);
  await second.initialize();
  await assert.rejects(second.request("tools/call", { name: "read_graph", arguments: {} }), /-32029.*running sandboxes across the cluster/);
  // The first session's sandbox is suspended when idle (1.5 s): its hold is given back.
  await eventually(async () => (await record(first.sessionId!)).state === "saved", "the first session to be saved", 30_000);
  await second.request("tools/call", { name: "read_graph", arguments: {} });
  await Promise.all([first.close(), second.close()]);
});

test("a tenant's open streams are counted across nodes", async () => {
  const auth = { authorization: `Bearer ${tightKey}` };
  const held = new AbortController();
  const open = await fetch(nodes[0]!.url("/sse"), { headers: auth, signal: held.signal });
  assert.equal(open.status, 200);
  const refusedThere = await fetch(nodes[2]!.url("/sse"), { headers: auth });
  assert.equal(refusedThere.status, 429, "the tenant's one stream is open on another node");
  await refusedThere.text();
  held.abort();
  await eventually(async () => {
    const again = await fetch(nodes[2]!.url("/sse"), { headers: auth, signal: AbortSignal.timeout(2_000) }).catch(() => undefined);
    void again?.body?.cancel();
    return again?.status === 200;
  }, "the stream to be given back", 10_000);
});

test("a revoked key is refused on every node", async () => {
  const tenants = JSON.parse(await readFile(tenantsPath, "utf8")) as { keys: { tenant: string }[] };
  tenants.keys = tenants.keys.filter((k) => k.tenant !== "slow");
  await writeFile(tenantsPath, JSON.stringify(tenants));
  for (const node of nodes) {
    await eventually(async () => (await fetch(node.url("/api/status"), { headers: { authorization: `Bearer ${slowKey}` } })).status === 401, `${node.id} to refuse the revoked key`, 10_000);
  }
});

test("Redis out of reach: every node fences itself, leaves the rotation (/readyz 503), and comes back with Redis", async () => {
  const client = await sessionHolding(viaLb(), "iota");
  await redis.client.call("CLIENT", "PAUSE", String(LEASE_MS * 3), "ALL"); // a real Redis stall, longer than the lease
  for (const node of nodes) {
    await eventually(async () => (await fetch(node.url("/readyz"))).status === 503, `${node.id} to leave the rotation`, LEASE_MS * 2);
  }
  for (const node of nodes) await eventually(async () => (await fetch(node.url("/readyz"))).ok, `${node.id} to be back`, LEASE_MS * 5);
  // Its idle save was held up by the stall, and then refused (its node had re-joined under a new epoch):
  // no node could prove it owned the session, so it is gone rather than answered stale.
  await assert.rejects(entityNames(client), /HTTP 404/);
});

test("SIGTERM drains a node: its busy session is saved, and carries on on another node", async () => {
  const n3 = nodes[2]!;
  const client = await sessionHolding(n3.url(), "zeta");
  assert.equal((await record(client.sessionId!)).state, "running");
  assert.equal(await n3.stop("SIGTERM"), 0);
  assert.equal((await record(client.sessionId!)).state, "saved", "drained into the store");
  client.url = viaLb();
  assert.deepEqual(await entityNames(client), ["zeta"]);
  await n3.start();
  await client.close();
});

test("a full cluster restart resumes suspended sessions", async () => {
  const client = await sessionHolding(viaLb(), "eta");
  await Promise.all(nodes.map((n) => n.stop("SIGTERM")));
  assert.equal((await record(client.sessionId!)).state, "saved");
  await Promise.all(nodes.map((n) => n.start()));
  await eventually(async () => (await fetch(`http://127.0.0.1:${haproxy.port}/readyz`)).ok, "haproxy to see the nodes again", 10_000);
  assert.deepEqual(await entityNames(client), ["eta"]);
  await client.close();
});
