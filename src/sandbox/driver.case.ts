import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { copyFile, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { alive } from "../../test/helpers.js";
import { serverChannel, type BootedVm, type SandboxDriver, type SnapshotFiles, type Vm, type VmSpec } from "./driver.js";
import { ResumeError, SnapshotError, SuspendError } from "./errors.js";
import { guestNotify, guestRequest } from "./guest-rpc.js";

const run = promisify(execFile);

/** The suite's tests, by name: what `skip` refers to. */
export const DRIVER_TESTS = [
  "boots cold, answers MCP through the guest, and snapshots device state only",
  "resumes independent clones from one snapshot, leaving the template's RAM file unchanged",
  "a suspended clone resumes from its saved state with the server's memory intact",
  "version() is non-empty and stable",
  "kill is idempotent, on a pending VM, on a running one, and on one that already ended",
  "a VMM killed from outside is reported as exited with its signal",
  "a corrupt device state fails the resume with a ResumeError and leaves no process behind",
  "a failed resume's error carries what the VMM said",
  "a suspend that cannot write its state throws a SuspendError and leaves the VM running",
  "a snapshot that cannot write its state throws a SnapshotError and ends the VM",
  "a state stream whose end is read only after the VMM has loaded it still resumes",
] as const;
export type DriverTestName = (typeof DRIVER_TESTS)[number];

export interface ToolCall {
  name: string;
  arguments: Record<string, unknown>;
}

export interface DriverHarness {
  driver: SandboxDriver;
  /** Must host an MCP server with tools (the memory server in QEMU runs), named `server`. */
  spec: VmSpec;
  server: string;
  /**
   * Two calls on the hosted server: `write` changes its in-memory state, and `read`'s answer then
   * contains `marker`; a clone fresh from the template's state does not.
   */
  statefulCalls: { write: ToolCall; read: ToolCall; marker: string };
  /** Whether the process behind a VM runs; by default its pid names a live process. */
  isRunning?: (vm: { pid: number }) => boolean;
}

export interface DriverSuiteOptions {
  name: string;
  setup: () => Promise<DriverHarness>;
  /** Tests this driver cannot run, with why (as hono's `runTest({ skip })`). */
  skip?: { reason: string; tests: DriverTestName[] }[];
}

const INITIALIZE = { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "driver-suite", version: "0" } };

/**
 * The behaviour every SandboxDriver must have. Each test makes what it needs from one template snapshot
 * that `before` builds (a cold boot, initialize, snapshot), so tests run alone or in any order.
 */
export function runDriverSuite({ name, setup, skip = [] }: DriverSuiteOptions): void {
  const skipped = new Map(skip.flatMap(({ reason, tests }) => tests.map((t) => [t, reason] as const)));
  const driverTest = (title: DriverTestName, fn: () => Promise<void>) => test(title, { skip: skipped.get(title) ?? false }, fn);

  describe(`${name} driver`, { timeout: 240_000 }, () => {
    let h: DriverHarness;
    let isRunning: (vm: { pid: number }) => boolean;
    let dir: string;
    let snapshot: SnapshotFiles;
    /** What the template's cold boot showed, for the test that checks it. */
    let boot: { vm: BootedVm; initialize: Record<string, unknown>; serverAlive: boolean };
    const mcp = (vm: Vm) => serverChannel(vm.channel, h.server);

    before(async () => {
      h = await setup();
      isRunning = h.isRunning ?? ((vm) => alive(vm.pid));
      dir = await mkdtemp(join(tmpdir(), "mcpv-driver-"));
      snapshot = { ramPath: join(dir, "ram"), statePath: join(dir, "state") };
      const vm = await h.driver.boot(h.spec, snapshot.ramPath, 120_000);
      try {
        const initialize = await guestRequest(mcp(vm), "initialize", INITIALIZE, 60_000);
        guestNotify(mcp(vm), "notifications/initialized");
        boot = { vm, initialize, serverAlive: (await vm.channel.ping(10_000)).serverAlive };
      } catch (err) {
        await vm.kill("template build failed");
        throw err;
      }
      await h.driver.snapshot(vm, snapshot.statePath);
    });
    after(async () => {
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    const clone = async (): Promise<Vm> => h.driver.resume(await h.driver.prestart(h.spec, snapshot), 20_000);
    const callTool = async (vm: Vm, call: ToolCall): Promise<string> =>
      JSON.stringify(await guestRequest(mcp(vm), "tools/call", { ...call }, 20_000));

    driverTest("boots cold, answers MCP through the guest, and snapshots device state only", async () => {
      assert.match(boot.vm.kernelRelease, /\S/);
      assert.ok(boot.initialize.serverInfo);
      assert.equal(boot.serverAlive, true);
      assert.equal(isRunning(boot.vm), false, "the template VM ends after its snapshot");
      const state = await stat(snapshot.statePath);
      assert.ok(state.size > 0 && state.size < 4 * 1024 * 1024, `device state only, got ${state.size} bytes`);
    });

    driverTest("resumes independent clones from one snapshot, leaving the template's RAM file unchanged", async () => {
      const ramBefore = await readFile(snapshot.ramPath);
      const [a, b] = await Promise.all([clone(), clone()]);
      try {
        for (const vm of [a!, b!]) {
          const list = await guestRequest(mcp(vm), "tools/list", undefined, 20_000);
          assert.ok(Array.isArray(list.tools) && list.tools.length > 0);
        }
        assert.notEqual(a!.pid, b!.pid);
        await callTool(a!, h.statefulCalls.write);
        assert.ok(!(await callTool(b!, h.statefulCalls.read)).includes(h.statefulCalls.marker), "one clone's state is not the other's");
      } finally {
        await Promise.all([a!.kill("test over"), b!.kill("test over")]);
      }
      assert.ok(ramBefore.equals(await readFile(snapshot.ramPath)), "clones map the template copy-on-write");
    });

    driverTest("a suspended clone resumes from its saved state with the server's memory intact", async () => {
      const vm = await clone();
      await callTool(vm, h.statefulCalls.write);
      const saved = join(dir, `suspended-${vm.id}`);
      const { bytes } = await h.driver.suspend(vm, saved);
      assert.ok(bytes > 0);
      assert.ok((await vm.exited).reason, "the suspended VM ended, with a reason");
      assert.equal(isRunning(vm), false);
      const resumed = await h.driver.resume(await h.driver.prestart(h.spec, snapshot), 20_000, saved);
      try {
        assert.ok((await callTool(resumed, h.statefulCalls.read)).includes(h.statefulCalls.marker));
      } finally {
        await resumed.kill("test over");
      }
    });

    driverTest("version() is non-empty and stable", async () => {
      const first = await h.driver.version();
      assert.match(first, /\S/);
      assert.equal(await h.driver.version(), first);
    });

    driverTest("kill is idempotent, on a pending VM, on a running one, and on one that already ended", async () => {
      const pending = await h.driver.prestart(h.spec, snapshot);
      await Promise.all([pending.kill("first"), pending.kill("second")]);
      assert.equal(isRunning(pending), false);
      assert.equal((await pending.exited).reason, "first");

      const vm = await clone();
      await Promise.all([vm.kill("first"), vm.kill("second")]);
      assert.equal(isRunning(vm), false);
      await vm.kill("third");
      assert.equal((await vm.exited).reason, "first");
      await assert.rejects(vm.channel.ping(2_000));
    });

    driverTest("a VMM killed from outside is reported as exited with its signal", async () => {
      const vm = await clone();
      process.kill(vm.pid, "SIGKILL");
      const exit = await vm.exited;
      assert.equal(exit.signal, "SIGKILL");
      await assert.rejects(vm.channel.ping(2_000));
      await vm.kill("after the fact"); // resolves on a VMM that is already gone
    });

    /** A copy of the template whose device state has bytes flipped all through it. */
    const corruptSnapshot = async (): Promise<SnapshotFiles> => {
      const bad = { ...snapshot, statePath: join(dir, `state.corrupt-${Math.random().toString(36).slice(2)}`) };
      await copyFile(snapshot.statePath, bad.statePath);
      const bytes = await readFile(bad.statePath);
      for (let i = Math.min(64, bytes.length >> 1); i < bytes.length; i += 97) bytes[i] = bytes[i]! ^ 0xff;
      await writeFile(bad.statePath, bytes);
      return bad;
    };

    driverTest("a corrupt device state fails the resume with a ResumeError and leaves no process behind", async () => {
      const pending = await h.driver.prestart(h.spec, await corruptSnapshot());
      await assert.rejects(h.driver.resume(pending, 10_000), ResumeError);
      assert.equal(isRunning(pending), false);
      assert.ok((await pending.exited).reason);
    });

    driverTest("a failed resume's error carries what the VMM said", async () => {
      const pending = await h.driver.prestart(h.spec, await corruptSnapshot());
      // Not only the broken socket a dying VMM shows as first.
      await assert.rejects(h.driver.resume(pending, 10_000), /QEMU stderr: .*qemu-system-x86_64: /);
    });

    driverTest("a suspend that cannot write its state throws a SuspendError and leaves the VM running", async () => {
      const vm = await clone();
      try {
        await callTool(vm, h.statefulCalls.write);
        await assert.rejects(h.driver.suspend(vm, join(dir, "no-such-dir", "state")), SuspendError);
        assert.equal(isRunning(vm), true);
        assert.ok((await callTool(vm, h.statefulCalls.read)).includes(h.statefulCalls.marker), "the server kept its memory");
      } finally {
        await vm.kill("test over");
      }
    });

    driverTest("a snapshot that cannot write its state throws a SnapshotError and ends the VM", async () => {
      const vm = await h.driver.boot(h.spec, join(dir, "ram-unsaved"), 120_000);
      await assert.rejects(h.driver.snapshot(vm, join(dir, "no-such-dir", "state")), SnapshotError);
      assert.ok((await vm.exited).reason);
      assert.equal(isRunning(vm), false);
    });

    driverTest("a state stream whose end is read only after the VMM has loaded it still resumes", async () => {
      // The VMM closes its end of the stream once the state is loaded. On a busy gateway (at start-up) the
      // file's end could be read only after that, and the clone, loaded fine, was killed for a "premature
      // close". A FIFO held open after the last byte makes that order certain.
      const late = { ...snapshot, statePath: join(dir, "state.fifo") };
      await run("mkfifo", [late.statePath]);
      const writer = spawn("sh", ["-c", '{ cat "$0"; sleep 1; } > "$1"', snapshot.statePath, late.statePath], { stdio: "ignore" });
      const writerDone = new Promise((resolve) => writer.once("exit", resolve));
      try {
        const vm = await h.driver.resume(await h.driver.prestart(h.spec, late), 20_000);
        assert.equal((await vm.channel.ping(10_000)).serverAlive, true);
        await vm.kill("test over");
      } finally {
        writer.kill(); // it may still block opening the FIFO if nothing read it
        await writerDone;
      }
    });
  });
}
