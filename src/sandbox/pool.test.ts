import { templateIdOf } from "./template.js";
import assert from "node:assert/strict";
import { after, beforeEach, describe, test } from "node:test";
import type { JsonRpcMessage } from "../../sandbox/agent/protocol.js";
import { canTransition, type SandboxState } from "./lifecycle.js";
import type { LeaseEvents } from "./lease.js";
import type { FaultInjectingDriver } from "./fault-injecting-driver.js";
import { eventually, fakeManifest, fakePool, recordTransitions } from "./pool.fixture.js";
import type { SandboxPool } from "./pool.js";

const OWNER = { tenant: "t", maxSandboxes: Number.POSITIVE_INFINITY };
const transitions = recordTransitions();
// Each test has a driver of its own, whose sandbox ids start over: edges are kept per test.
beforeEach(() => transitions.clear());
after(() => transitions.stop());

/** A lease whose messages and failures are collected; `call` sends a tools/call and waits for its answer. */
function leaseOn(pool: SandboxPool, session: string, server = "fake", owner = OWNER) {
  const replies = new Map<unknown, (m: JsonRpcMessage) => void>();
  const failures: Array<{ id: unknown; code: string }> = [];
  let saved = 0;
  const events: LeaseEvents = {
    message: (m) => replies.get(m.id)?.(m),
    requestFailed: (id, error) => {
      failures.push({ id, code: error.code });
      replies.get(id)?.({ error: { code: error.code } });
    },
    savedStateChanged: () => void saved++,
  };
  const lease = pool.lease({ scope: "session", server, session }, owner, events);
  let nextId = 1;
  async function call(name: string, args: Record<string, unknown>): Promise<JsonRpcMessage> {
    const id = nextId++;
    await lease.ready();
    const reply = new Promise<JsonRpcMessage>((resolve) => replies.set(id, resolve));
    lease.send({ jsonrpc: "2.0", id, method: "tools/call", params: { name, arguments: args } });
    return reply;
  }
  const text = (m: JsonRpcMessage) => (m.result as { content: { text: string }[] }).content[0]!.text;
  return { lease, call, text, failures, savedChanges: () => saved };
}

/** Every edge a sandbox took is one of the table's (lifecycle.ts). */
function assertObeysTable(edges: string[]): void {
  for (const edge of edges) {
    const [from, to] = edge.split(">") as [SandboxState, SandboxState];
    assert.ok(canTransition(from, to), `illegal edge taken: ${edge}`);
  }
}

const IGNORE: LeaseEvents = { message: () => undefined, requestFailed: () => undefined, savedStateChanged: () => undefined };

describe("sandbox pool and leases (FaultInjectingDriver, no image)", () => {
  test("a sandbox exists from prestart: pooled -> resuming -> idle <-> active, and destroyed when released", async () => {
    const { pool, driver } = await fakePool();
    const { lease, call, text } = leaseOn(pool, "s1");
    const acquired = await lease.ready();
    assert.equal(acquired?.source, "cold-vmm");
    assert.equal(text(await call("echo", { text: "hi" })), "hi");
    await lease.release({ keep: false });
    const id = pool.stats()[0]!.sandboxes[0]?.id;
    assert.equal(id, undefined, "a released lease holds no sandbox");
    assert.deepEqual(transitions.edges().slice(0, 5), ["pooled>resuming", "resuming>idle", "idle>active", "active>idle", "idle>destroyed"]);
    assertObeysTable(transitions.edges());
    assert.equal(driver.running, 0, "no VMM left");
    await pool.close();
  });

  test("suspend and resume keep the server's memory; the saved ref names the template", async () => {
    const { pool, driver } = await fakePool([fakeManifest({ timeouts: { callMs: 2_000, idleSuspendMs: 60_000 } })]);
    const { lease, call, text, savedChanges } = leaseOn(pool, "s2");
    await call("remember", { key: "k", value: "v1" });
    await lease.suspendIfIdle();
    const ref = lease.savedRef;
    assert.ok(ref, "suspended: a saved ref");
    assert.equal(ref.templateKey, templateIdOf(await pool.template("fake")));
    assert.equal(lease.running, false);
    assert.equal(driver.running, 0, "a suspended sandbox holds no VMM");
    const acquired = await lease.ready();
    assert.equal(acquired?.source, "suspended");
    assert.equal(text(await call("recall", { key: "k" })), "v1");
    assert.ok(savedChanges() >= 2, "the holder heard of the suspend and the resume");
    assertObeysTable(transitions.edges());
    await pool.close();
  });

  test("a destroy during a suspend takes the suspending -> destroyed edge and leaves no saved state", async () => {
    const { pool, driver } = await fakePool([fakeManifest({ timeouts: { callMs: 2_000, idleSuspendMs: 60_000 } })]);
    const { lease, call } = leaseOn(pool, "s3");
    await call("remember", { key: "k", value: "v" });
    const held = driver.holdNext("suspend");
    const suspending = lease.suspendIfIdle();
    await held.reached;
    const sandboxId = pool.stats()[0]!.sandboxes[0]!.id;
    const released = lease.release({ keep: false });
    held.release();
    await Promise.allSettled([suspending, released]);
    assert.deepEqual(transitions.edges(sandboxId).slice(-2), ["idle>suspending", "suspending>destroyed"]);
    assert.equal(driver.running, 0);
    const ref = { server: "fake", sandboxId, templateKey: templateIdOf(await pool.template("fake")) };
    assert.equal(await pool.adopt({ scope: "session", server: "fake", session: "s3" }, OWNER, ref, IGNORE), undefined, "nothing saved is left to adopt");
    await pool.close();
  });

  test("the suspend gate: one save at a time; a sandbox used while it waited for its turn stays running", async () => {
    const { pool, driver } = await fakePool([fakeManifest({ timeouts: { callMs: 2_000, idleSuspendMs: 60_000 } })], { runSlots: 1 });
    const a = leaseOn(pool, "sg-a");
    const b = leaseOn(pool, "sg-b");
    await Promise.all([a.call("remember", { key: "k", value: "a" }), b.call("remember", { key: "k", value: "b" })]);
    const bChanges = b.savedChanges();
    const held = driver.holdNext("suspend");
    const savingA = a.lease.suspendIfIdle();
    await held.reached;
    const savingB = b.lease.suspendIfIdle();
    await new Promise((r) => setImmediate(r));
    assert.equal(b.lease.running, true, "b waits for its turn, running");
    assert.equal(b.text(await b.call("recall", { key: "k" })), "b", "and answers at once");
    held.release();
    await Promise.all([savingA, savingB]);
    assert.equal(a.lease.running, false, "a was saved");
    assert.equal(b.lease.running, true, "b was used while it waited: not saved");
    assert.equal(b.savedChanges(), bChanges, "b was never suspended, not even for a moment");
    await pool.close();
  });

  test("a failed suspend leaves the sandbox running with its state (suspending -> idle)", async () => {
    const { pool, driver } = await fakePool([fakeManifest({ timeouts: { callMs: 2_000, idleSuspendMs: 60_000 } })]);
    const { lease, call, text } = leaseOn(pool, "s4");
    await call("remember", { key: "k", value: "kept" });
    driver.failNext("suspend");
    await lease.suspendIfIdle();
    assert.equal(lease.running, true);
    assert.equal(lease.savedRef, undefined);
    assert.equal(text(await call("recall", { key: "k" })), "kept");
    const id = pool.stats()[0]!.sandboxes[0]!.id;
    assert.deepEqual(transitions.edges(id).filter((e) => e.startsWith("suspending")), ["suspending>idle"]);
    await pool.close();
  });

  test("a sandbox that dies while idle is reported lost once, then the lease gets a fresh one", async () => {
    const { pool, driver, vms } = await fakePool();
    const { lease, call, text } = leaseOn(pool, "s5");
    await call("remember", { key: "k", value: "v" });
    const vm = vms.at(-1)!;
    driver.crashGuest(vm);
    await vm.exited;
    await new Promise((r) => setImmediate(r)); // the sandbox hears of the exit after it settles
    await assert.rejects(lease.ready(), { code: "STATE_LOST" });
    assert.equal(text(await call("recall", { key: "k" })), "", "a fresh sandbox, from the template");
    await pool.close();
  });

  test("a sandbox whose VM dies during its suspend is reported lost, not left idle with a dead VM (the death put at a chosen point of the save, which real QEMU cannot be made to hit; the churn test meets it for real)", async () => {
    const { pool, driver, vms } = await fakePool([fakeManifest({ timeouts: { callMs: 30_000, idleSuspendMs: 60_000 } })]);
    const { lease, call, text } = leaseOn(pool, "s-dies-suspending");
    await call("remember", { key: "k", value: "v" });
    const vm = vms.at(-1)!;
    const held = driver.holdNext("suspend");
    const suspending = lease.suspendIfIdle();
    await held.reached;
    driver.crashGuest(vm); // QEMU killed mid-migration: the suspend fails, and the VM is gone
    held.release();
    await suspending;
    await new Promise((r) => setImmediate(r));
    // Before the fix the sandbox went back to idle with the dead VM, and this call waited out callMs.
    await assert.rejects(lease.ready(), { code: "STATE_LOST" });
    assert.equal(text(await call("recall", { key: "k" })), "", "a fresh sandbox, from the template");
    await pool.close();
  });

  test("a call past timeouts.callMs fails with CALL_TIMEOUT naming the setting, and the sandbox is replaced", async () => {
    const { pool, driver } = await fakePool([fakeManifest({ timeouts: { callMs: 100, idleSuspendMs: 0 } })]);
    const { call, failures } = leaseOn(pool, "s6");
    await call("echo", { text: "warm" });
    driver.hangNextCall();
    await call("echo", { text: "stuck" });
    assert.deepEqual(failures.map((f) => f.code), ["CALL_TIMEOUT"]);
    assert.equal(pool.stats()[0]!.leased, 0, "the timed-out sandbox is gone");
    await pool.close();
  });

  test("the run gate: past its slots a request waits; a call running past its slice gives its slot up", async () => {
    const { pool, driver } = await fakePool([fakeManifest({ timeouts: { callMs: 30_000, idleSuspendMs: 0 } })], { runSlots: 1, runSliceMs: 500 });
    const a = leaseOn(pool, "gate-a");
    const b = leaseOn(pool, "gate-b");
    await Promise.all([a.call("echo", { text: "warm" }), b.call("echo", { text: "warm" })]);
    assert.deepEqual(pool.runGateStats(), { running: 0, waiting: 0 }, "answered calls give their slots back");
    driver.hangNextCall();
    const stuck = a.call("echo", { text: "stuck" });
    await eventually(() => pool.runGateStats().running === 1, "the hung call holds the slot");
    const answered = b.call("echo", { text: "after" });
    await eventually(() => pool.runGateStats().waiting === 1, "the second session's call waits for it");
    assert.equal(b.text(await answered), "after", "the hung call's slice ended and gave its slot to the next");
    assert.deepEqual(a.failures, [], "the hung call still runs: it only lost its slot");
    void stuck;
    await pool.close();
  });

  test("the warm pool grows while sessions find it empty, up to 4x its size, and shrinks back when they stop", async () => {
    const { pool } = await fakePool([fakeManifest({ pool: { prestarted: 1, warm: 1 } })], { warmShrinkAfterMs: 2_000 });
    const stats = () => pool.stats()[0]!;
    await eventually(() => stats().warm === 1, "the manifest's one warm clone");
    const sessions = Array.from({ length: 6 }, (_, i) => leaseOn(pool, `burst-${i}`));
    for (const s of sessions) await s.call("echo", { text: "hi" });
    assert.equal(stats().warmTarget, 4, "five misses, capped at 4x the manifest's 1");
    await eventually(() => stats().warm === 4, "the pool refilled to its grown size");
    await eventually(() => stats().warmTarget === 1 && stats().warm === 1, "back to the manifest's size after misses stopped", 15_000);
    await pool.close();
  });

  test("a warm clone whose warm-up fails is destroyed, not left running", async () => {
    // Every clone's warm-up call hangs past timeouts.callMs (prestart is for clones only, never the template).
    const arm = (driver: FaultInjectingDriver) => {
      const prestart = driver.prestart.bind(driver);
      driver.prestart = (...args) => (driver.hangNextCall(), prestart(...args));
    };
    const warmup = [{ method: "tools/call", params: { name: "echo", arguments: { text: "warm" } } }];
    const { pool, driver } = await fakePool([fakeManifest({ pool: { prestarted: 0, warm: 1 }, warmup, timeouts: { callMs: 100, idleSuspendMs: 0 } })], { arm });
    // Refill tries three times and each warm-up fails: every clone it made must be gone.
    await eventually(() => pool.stats()[0]!.status === "ready", "the template is ready");
    await eventually(() => driver.running === 0, "no fake VMM left running");
    assert.equal(pool.stats()[0]!.warm, 0);
    await pool.close();
  });

  test("a tenant at its limit has its least recently used idle sandbox suspended to make room", async () => {
    const { pool, driver } = await fakePool([fakeManifest({ timeouts: { callMs: 2_000, idleSuspendMs: 60_000 } })]);
    const owner = { tenant: "small", maxSandboxes: 1 };
    const first = leaseOn(pool, "a", "fake", owner);
    await first.call("remember", { key: "k", value: "first" });
    const second = leaseOn(pool, "b", "fake", owner);
    await second.call("echo", { text: "x" });
    assert.ok(first.lease.savedRef, "the first was suspended to make room");
    assert.equal(pool.runningSandboxes("small"), 1);
    assert.equal(driver.running, 1);
    await pool.close();
  });

  test("the global VM budget: past it, idle pooled VMs go first, then requests wait, then BUSY", async () => {
    const { pool } = await fakePool([fakeManifest({ pool: { prestarted: 1, warm: 0 } })], { limits: { maxVms: 1, maxQueue: 0, queueTimeoutMs: 50 } });
    await eventually(() => pool.stats()[0]!.prestarted === 1, "one prestarted VMM in the pool");
    const first = leaseOn(pool, "a");
    await first.call("echo", { text: "x" });
    const second = leaseOn(pool, "b");
    await assert.rejects(second.lease.ready(), { code: "BUSY" });
    await first.lease.release({ keep: false });
    await second.call("echo", { text: "y" });
    await pool.close();
  });

  test("closing the pool while a refill starts a VM ends that VM too before close resolves", async () => {
    const arm = (driver: FaultInjectingDriver) => void (held = driver.holdNext("prestart"));
    let held: { reached: Promise<void>; release: () => void } | undefined;
    const { pool, driver } = await fakePool([fakeManifest({ pool: { prestarted: 1, warm: 0 } })], { arm });
    await held!.reached;
    const closed = pool.close();
    held!.release();
    await closed;
    assert.equal(driver.running, 0, "no VM outlives the pool's close");
  });

  test("an unknown server is a typed error naming it", async () => {
    const { pool } = await fakePool();
    assert.throws(() => leaseOn(pool, "z", "nope"), { code: "UNKNOWN_SERVER", message: "No hosted server is named 'nope'" });
    await pool.close();
  });

  test("a resume from disk that fails destroys the sandbox and says so; the next ready starts afresh", async () => {
    const { pool, driver } = await fakePool([fakeManifest({ timeouts: { callMs: 2_000, idleSuspendMs: 60_000 } })]);
    const { lease, call, text } = leaseOn(pool, "s7");
    await call("remember", { key: "k", value: "v" });
    await lease.suspendIfIdle();
    driver.failNext("resume");
    await assert.rejects(lease.ready(), { code: "RESUME_FAILED" });
    assert.equal(text(await call("recall", { key: "k" })), "");
    assert.equal(driver.running, 1);
    await pool.close();
  });

  describe("a shared sandbox (servers naming one `sandbox`)", () => {
    const shared = (idleSuspendMs = 0) =>
      ["a", "b"].map((name) => fakeManifest({ name, sandbox: "ws", timeouts: { callMs: 2_000, idleSuspendMs } }));

    test("a session's leases on its servers act on one clone; another session has its own", async () => {
      const { pool, driver } = await fakePool(shared());
      const a1 = leaseOn(pool, "s1", "a");
      const b1 = leaseOn(pool, "s1", "b");
      const b2 = leaseOn(pool, "s2", "b");
      await a1.call("remember", { key: "k", value: "written through a" });
      assert.equal(b1.text(await b1.call("recall", { key: "k" })), "written through a", "b sees what a wrote in the same session");
      assert.equal(b2.text(await b2.call("recall", { key: "k" })), "", "another session's clone is its own");
      assert.equal(driver.running, 2, "one VM per session, not per server");
      assert.deepEqual(pool.stats().map((s) => [s.server, s.members]), [["ws", ["a", "b"]]]);
      await pool.close();
    });

    test("the same request id from two servers of one clone reaches each server's lease", async () => {
      const { pool } = await fakePool(shared());
      const a = leaseOn(pool, "s1", "a");
      const b = leaseOn(pool, "s1", "b");
      // Both leases count ids from 1: their first calls carry the same id in one sandbox.
      const [ra, rb] = await Promise.all([a.call("echo", { text: "from a" }), b.call("echo", { text: "from b" })]);
      assert.equal(a.text(ra), "from a");
      assert.equal(b.text(rb), "from b");
      await pool.close();
    });

    test("the clone lives while any server's lease holds it, and ends with the last", async () => {
      const { pool, driver } = await fakePool(shared());
      const a = leaseOn(pool, "s1", "a");
      const b = leaseOn(pool, "s1", "b");
      await a.call("remember", { key: "k", value: "v" });
      await a.lease.release({ keep: false });
      assert.equal(b.text(await b.call("recall", { key: "k" })), "v", "b's lease still holds the clone");
      await b.lease.release({ keep: false });
      assert.equal(driver.running, 0);
      await pool.close();
    });

    test("suspended once, adopted by every server after a restart, the clone comes back once with its state", async () => {
      const { pool, driver } = await fakePool(shared(60_000));
      const a = leaseOn(pool, "s1", "a");
      const b = leaseOn(pool, "s1", "b");
      await a.call("remember", { key: "k", value: "kept" });
      await b.lease.ready();
      await b.lease.suspendIfIdle();
      const ref = a.lease.savedRef;
      assert.ok(ref, "suspended");
      assert.deepEqual(b.lease.savedRef, ref, "one saved sandbox for both servers");
      assert.equal(ref.server, "ws", "saved under the shared sandbox's name");
      await Promise.all([a.lease.release({ keep: true }), b.lease.release({ keep: true })]);

      const adoptedA = await pool.adopt({ scope: "session", server: "a", session: "s1" }, OWNER, ref, IGNORE);
      assert.ok(adoptedA);
      const b2 = leaseOn(pool, "other", "b"); // a different session must not join it
      const replies: JsonRpcMessage[] = [];
      const adoptedB = await pool.adopt({ scope: "session", server: "b", session: "s1" }, OWNER, ref, { ...IGNORE, message: (m) => void replies.push(m) });
      assert.ok(adoptedB);
      await adoptedB.ready();
      adoptedB.send({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "recall", arguments: { key: "k" } } });
      await eventually(() => replies.length === 1, "b's adopted lease gets its answer");
      assert.equal((replies[0]!.result as { content: { text: string }[] }).content[0]!.text, "kept");
      assert.equal(adoptedA.running, true, "the other server's lease sees the same running clone");
      assert.equal(b2.text(await b2.call("recall", { key: "k" })), "");
      assert.equal(driver.running, 2);
      await pool.close();
    });
  });

  describe("idle sandboxes are frozen (vCPUs stopped) and thawed by the next call", () => {
    test("a session's sandbox idle for a moment is frozen; its next call thaws it and is answered", async () => {
      const { pool } = await fakePool();
      const { lease, call, text } = leaseOn(pool, "f1");
      await call("remember", { key: "k", value: "v" });
      const sandbox = () => pool.stats()[0]!.sandboxes[0]!;
      await eventually(() => sandbox().frozen, "the idle sandbox to be frozen");
      assert.equal(text(await call("recall", { key: "k" })), "v", "a frozen guest answers nothing: the call thawed it");
      assert.equal(sandbox().frozen, false);
      await lease.release({ keep: false });
      await pool.close();
    });

    test("warm clones wait frozen; a server that must keep running is never frozen", async () => {
      const { pool } = await fakePool([fakeManifest({ pool: { prestarted: 0, warm: 1 } }), fakeManifest({ name: "busy", pool: { prestarted: 0, warm: 1 }, guest: { freezeWhenIdle: false } })]);
      await eventually(() => pool.stats()[0]!.warmFrozen === 1, "the warm clone to wait frozen");
      const warm = leaseOn(pool, "f2");
      assert.equal((await warm.lease.ready())?.source, "warm-pool");
      assert.equal(warm.text(await warm.call("echo", { text: "thawed" })), "thawed");
      // The pool freezes a warm clone before it counts it as warm: once there, it was frozen or never will be.
      await eventually(() => pool.stats()[1]!.warm === 1, "busy's warm clone");
      assert.equal(pool.stats()[1]!.warmFrozen, 0, "freezeWhenIdle: false keeps it running");
      await pool.close();
    });
  });
});
