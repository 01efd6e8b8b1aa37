import assert from "node:assert/strict";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { serverChannel, type SnapshotFiles, type Vm } from "./driver.js";
import { runDriverSuite } from "./driver.case.js";
import { CallTimeoutError, GuestExitedError, ResumeError, SuspendError } from "./errors.js";
import { FAKE_VM_SPEC, FaultInjectingDriver } from "./fault-injecting-driver.js";
import { guestNotify, guestRequest } from "./guest-rpc.js";

const SPEC = FAKE_VM_SPEC;

runDriverSuite({
  name: "fault-injecting",
  setup: async () => {
    const driver = new FaultInjectingDriver();
    return {
      driver,
      spec: SPEC,
      server: "fake",
      isRunning: (vm) => driver.isRunning(vm),
      statefulCalls: {
        write: { name: "remember", arguments: { key: "k", value: "driver-suite-marker" } },
        read: { name: "recall", arguments: { key: "k" } },
        marker: "driver-suite-marker",
      },
    };
  },
  skip: [
    {
      reason: "its VMs are objects, not processes: there is nothing to signal (crashGuest is tested below)",
      tests: ["a VMM killed from outside is reported as exited with its signal"],
    },
    {
      reason: "no VMM prints anything; the error names the damaged file instead",
      tests: ["a failed resume's error carries what the VMM said"],
    },
    {
      reason: "it reads a state file whole before loading it: no VMM closes the stream early",
      tests: ["a state stream whose end is read only after the VMM has loaded it still resumes"],
    },
  ],
});

describe("fault-injecting driver faults", () => {
  let driver: FaultInjectingDriver;
  let dir: string;
  let snapshot: SnapshotFiles;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "mcpv-fault-"));
    snapshot = { ramPath: join(dir, "ram"), statePath: join(dir, "state") };
    driver = new FaultInjectingDriver();
    const vm = await driver.boot(SPEC, snapshot.ramPath, 1_000);
    await guestRequest(serverChannel(vm.channel, "fake"), "initialize", {}, 1_000);
    guestNotify(serverChannel(vm.channel, "fake"), "notifications/initialized");
    await driver.snapshot(vm, snapshot.statePath);
  });
  after(async () => {
    assert.equal(driver.running, 0, "every fake VMM a test started has ended");
    await rm(dir, { recursive: true, force: true });
  });

  const clone = async (): Promise<Vm> => driver.resume(await driver.prestart(SPEC, snapshot), 1_000);
  const call = (vm: Vm, name: string, args: Record<string, unknown>, timeoutMs = 1_000) =>
    guestRequest(serverChannel(vm.channel, "fake"), "tools/call", { name, arguments: args }, timeoutMs);

  test("an injected resume failure is a ResumeError and leaves no VMM behind; the next resume works", async () => {
    driver.failNext("resume");
    const pending = await driver.prestart(SPEC, snapshot);
    await assert.rejects(driver.resume(pending, 1_000), ResumeError);
    assert.equal(driver.isRunning(pending), false);
    const vm = await clone();
    await vm.kill("test over");
  });

  test("an injected suspend failure is a SuspendError and the VM keeps running with its state", async () => {
    const vm = await clone();
    await call(vm, "remember", { key: "a", value: "1" });
    driver.failNext("suspend");
    await assert.rejects(driver.suspend(vm, join(dir, "s1")), SuspendError);
    assert.deepEqual(await call(vm, "recall", { key: "a" }), { content: [{ type: "text", text: "1" }] });
    await vm.kill("test over");
  });

  test("an injected error is thrown as given", async () => {
    const error = new Error("disk on fire");
    driver.failNext("prestart", error);
    await assert.rejects(driver.prestart(SPEC, snapshot), (err) => err === error);
  });

  test("a held suspend saves once released", async () => {
    const vm = await clone();
    const hold = driver.holdNext("suspend");
    const suspending = driver.suspend(vm, join(dir, "s2"));
    await hold.reached;
    assert.equal(driver.isRunning(vm), true);
    hold.release();
    assert.ok((await suspending).bytes > 0);
    assert.equal(driver.isRunning(vm), false);
  });

  test("a VM destroyed while its suspend is held fails the suspend, naming why it ended", async () => {
    const vm = await clone();
    const hold = driver.holdNext("suspend");
    const suspending = driver.suspend(vm, join(dir, "s3"));
    await hold.reached;
    await vm.kill("destroyed during suspend");
    await assert.rejects(suspending, (err: Error) => err instanceof SuspendError && /destroyed during suspend/.test(err.message));
    await assert.rejects(stat(join(dir, "s3")), { code: "ENOENT" });
  });

  test("a pending VM killed while its resume is held fails the resume with a ResumeError", async () => {
    const pending = await driver.prestart(SPEC, snapshot);
    const hold = driver.holdNext("resume");
    const resuming = driver.resume(pending, 1_000);
    await hold.reached;
    await pending.kill("pool closed");
    await assert.rejects(resuming, ResumeError);
  });

  test("a hung call never answers: the caller's deadline ends it, and the next call is answered", async () => {
    const vm = await clone();
    driver.hangNextCall();
    await assert.rejects(call(vm, "echo", { text: "x" }, 50), CallTimeoutError);
    assert.deepEqual(await call(vm, "echo", { text: "y" }), { content: [{ type: "text", text: "y" }] });
    await vm.kill("test over");
  });

  test("a crashed guest ends the VM with the server's exit, and its channel says the guest exited", async () => {
    const vm = await clone();
    driver.crashGuest(vm, { code: 3, signal: null, stderrTail: "boom" });
    const exit = await vm.exited;
    assert.deepEqual(exit.serverExit, { code: 3, signal: null, stderrTail: "boom" });
    assert.equal(driver.isRunning(vm), false);
    assert.throws(() => vm.channel.send("fake", { jsonrpc: "2.0", id: 1, method: "ping" }), GuestExitedError);
  });

  test("an unknown method gets -32601", async () => {
    const vm = await clone();
    await assert.rejects(guestRequest(serverChannel(vm.channel, "fake"), "nope/nothing", undefined, 1_000), (err: { rpcCode?: number }) => err.rpcCode === -32601);
    await vm.kill("test over");
  });
});
