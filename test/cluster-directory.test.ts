// The cluster's shared state on a real Redis, without VMs: fencing of a stale node's writes, one winner
// when nodes race for a saved session, quota holds that die with their node, the shared request rate.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import pino from "pino";
import { ClusterHolds } from "../src/cluster/cluster-holds.js";
import { ClusterRateLimiter } from "../src/cluster/cluster-rate-limiter.js";
import { ClusterUnavailableError } from "../src/cluster/errors.js";
import { NodeLease } from "../src/cluster/node-lease.js";
import { connectRedis, keys, type Redis } from "../src/cluster/redis.js";
import { SessionDirectory } from "../src/cluster/session-directory.js";
import { DisownedError } from "../src/router/session-records.js";
import type { StoredSession } from "../src/router/session-store.js";
import { QuotaError } from "../src/tenancy/quota-error.js";
import { eventually } from "./eventually.js";
import { startRedis, type TestRedis } from "./services/redis.js";

let redis: TestRedis;
const opened: { lease: NodeLease; client: Redis }[] = [];
const log = pino({ level: "silent" });

before(async () => {
  redis = await startRedis();
});

after(async () => {
  for (const { lease, client } of opened) {
    await lease.close();
    client.disconnect();
  }
  await redis.stop();
});

/** A node: its own connection and lease, as each gateway process has. */
async function node(id: string, leaseMs = 10_000): Promise<{ lease: NodeLease; client: Redis; directory: SessionDirectory }> {
  const client = connectRedis(redis.url);
  client.on("error", () => undefined);
  await client.connect();
  const lease = new NodeLease(client, { nodeId: id, url: `http://${id}.test:8080`, leaseMs, log, companions: [keys.holds("sessions", id)] });
  await lease.join();
  opened.push({ lease, client });
  return { lease, client, directory: new SessionDirectory(client, lease) };
}

const saved = (id: string): StoredSession => ({
  id,
  tenant: "acme",
  route: "memory",
  transport: "streamable-http",
  protocolVersion: "2025-11-25",
  clientCapabilities: {},
  sandboxes: { memory: { sandboxId: "vm-1", templateKey: "k" } },
  savedAt: new Date().toISOString(),
});

test("a node whose lease lapsed cannot save; the session is gone for everyone (404), never older state", async () => {
  const a = await node("a1");
  const b = await node("b1");
  await a.directory.running("s1", "acme", "memory");
  assert.deepEqual(await b.directory.claim("s1", "acme", "memory"), { kind: "elsewhere", node: "a1", url: "http://a1.test:8080" });
  await redis.client.del(keys.node("a1")); // what Redis does when a1's lease expires
  assert.deepEqual(await b.directory.claim("s1", "acme", "memory"), { kind: "none" }, "its owner is gone: so is the session");
  await assert.rejects(a.directory.save(saved("s1")), DisownedError);
  assert.equal(await redis.client.exists(keys.session("s1")), 0, "the stale node's save left nothing");
});

test("a save by a node that no longer owns the session is refused", async () => {
  const a = await node("a2");
  const b = await node("b2");
  await a.directory.running("s2", "acme", "memory");
  await a.directory.save(saved("s2"));
  assert.equal((await b.directory.claim("s2", "acme", "memory")).kind, "saved");
  await assert.rejects(a.directory.save(saved("s2")), DisownedError, "b runs it now");
  await assert.rejects(a.directory.running("s2", "acme", "memory"), DisownedError);
  assert.equal(await redis.client.hget(keys.session("s2"), "owner"), "b2");
});

test("nodes racing to claim one saved session: exactly one wins, the others are sent to it", async () => {
  const racers = await Promise.all(["r1", "r2", "r3"].map((id) => node(id)));
  await racers[0]!.directory.running("s3", "acme", "memory");
  await racers[0]!.directory.save(saved("s3"));
  const claims = await Promise.all(racers.map((r) => r.directory.claim("s3", "acme", "memory")));
  const winners = claims.filter((c) => c.kind === "saved");
  assert.equal(winners.length, 1);
  const owner = await redis.client.hget(keys.session("s3"), "owner");
  for (const c of claims) if (c.kind !== "saved") assert.deepEqual(c, { kind: "elsewhere", node: owner, url: `http://${owner}.test:8080` });
  assert.deepEqual(await racers[1]!.directory.claim("s3", "globex", "memory"), { kind: "none" }, "another tenant sees no such session");
});

test("a tenant's open sessions are counted across nodes, and a dead node's holds go with it", async () => {
  const a = await node("h1");
  const b = await node("h2");
  const holdsA = new ClusterHolds(a.client, a.lease, "sessions", "open sessions");
  const holdsB = new ClusterHolds(b.client, b.lease, "sessions", "open sessions");
  const release = await holdsA.take("t-holds", 2);
  await holdsB.take("t-holds", 2);
  await assert.rejects(holdsA.take("t-holds", 2), QuotaError);
  release();
  await holdsA.take("t-holds", 2); // given back
  await redis.client.del(keys.node("h2")); // h2 died: its lease expired
  await holdsA.take("t-holds", 2);
  assert.equal(await holdsA.count("t-holds"), 2);
});

test("the request rate is one bucket for the cluster; Redis away is a retryable refusal", async () => {
  const a = await node("q1");
  const b = await node("q2");
  const limits = { requestsPerSecond: 0.01, burst: 3 };
  const rates = [new ClusterRateLimiter(a.client), new ClusterRateLimiter(b.client)];
  for (let i = 0; i < 3; i++) await rates[i % 2]!.take("t-rate", limits);
  await assert.rejects(rates[1]!.take("t-rate", limits), (e: unknown) => e instanceof QuotaError && e.retryAfterSeconds >= 90);
  await assert.rejects(rates[0]!.take("t-rate", limits), QuotaError);
  const down = connectRedis("redis://127.0.0.1:1/0");
  down.on("error", () => undefined);
  await assert.rejects(new ClusterRateLimiter(down).take("t-rate", limits), ClusterUnavailableError);
  down.disconnect();
});

test("a node that cannot renew its lease fences itself before the lease ends", async () => {
  const a = await node("f1", 1_000);
  let fencedAt = 0;
  a.lease.onLost(async () => void (fencedAt = Date.now()));
  const paused = Date.now();
  await redis.client.call("CLIENT", "PAUSE", "2500", "ALL"); // Redis answers nobody for 2.5 s
  await eventually(() => fencedAt > 0, "the node to fence itself", 5_000);
  assert.ok(fencedAt - paused < 1_000, `fenced ${fencedAt - paused} ms after renewals stopped, before the 1 s lease ended`);
  assert.equal(a.lease.held(), false);
});
