import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { copyFile, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import type { SandboxDriver, SnapshotFiles, VmSpec } from "./driver.js";
import { guestNotify, guestRequest } from "./guest-rpc.js";

const run = promisify(execFile);

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * The behaviour every SandboxDriver must have, run against real VMs. `spec` must host an MCP server
 * (the memory server in our runs).
 */
export function runDriverSuite(name: string, setup: () => Promise<{ driver: SandboxDriver; spec: VmSpec }>): void {
  describe(`${name} driver`, { timeout: 240_000 }, () => {
    let driver: SandboxDriver;
    let spec: VmSpec;
    let dir: string;
    let snapshot: SnapshotFiles;

    before(async () => {
      ({ driver, spec } = await setup());
      dir = await mkdtemp(join(tmpdir(), "mcpv-driver-"));
      snapshot = { ramPath: join(dir, "ram"), statePath: join(dir, "state") };
    });
    after(async () => {
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    test("boots cold, answers MCP through the agent, and snapshots device state only", async () => {
      const vm = await driver.boot(spec, snapshot.ramPath, 120_000);
      assert.match(vm.kernelRelease, /\S/);
      const init = await guestRequest(vm.channel, "initialize", {
        protocolVersion: "2025-11-25",
        capabilities: {},
        clientInfo: { name: "t", version: "0" },
      }, 60_000);
      assert.ok(init.serverInfo);
      guestNotify(vm.channel, "notifications/initialized");
      const pong = await vm.channel.ping(10_000);
      assert.equal(pong.serverAlive, true);
      await driver.snapshot(vm, snapshot.statePath);
      assert.equal(alive(vm.pid), false, "the template VM ends after its snapshot");
      const state = await stat(snapshot.statePath);
      assert.ok(state.size > 1000 && state.size < 4 * 1024 * 1024, `device state only, got ${state.size} bytes`);
    });

    test("resumes independent clones from one snapshot, leaving the template's RAM file unchanged", async () => {
      const ramBefore = await readFile(snapshot.ramPath);
      const clones = await Promise.all([0, 1].map(async () => driver.resume(await driver.prestart(spec, snapshot), 20_000)));
      for (const vm of clones) {
        const list = await guestRequest(vm.channel, "tools/list", undefined, 20_000);
        assert.ok(Array.isArray(list.tools) && list.tools.length > 0);
      }
      assert.notEqual(clones[0]!.pid, clones[1]!.pid);
      await Promise.all(clones.map((vm) => vm.kill("test over")));
      assert.ok(ramBefore.equals(await readFile(snapshot.ramPath)), "clones map the template copy-on-write");
    });

    test("a killed VMM is reported as exited with a reason", async () => {
      const vm = await driver.resume(await driver.prestart(spec, snapshot), 20_000);
      process.kill(vm.pid, "SIGKILL");
      const exit = await vm.exited;
      assert.equal(exit.signal, "SIGKILL");
      await assert.rejects(vm.channel.ping(2_000));
    });

    test("a corrupt device state fails the resume with RESUME_FAILED and leaves no process behind", async () => {
      const bad = { ...snapshot, statePath: join(dir, "state.corrupt") };
      await copyFile(snapshot.statePath, bad.statePath);
      const bytes = await readFile(bad.statePath);
      for (let i = 64; i < bytes.length; i += 97) bytes[i] = bytes[i]! ^ 0xff;
      await writeFile(bad.statePath, bytes);
      const pending = await driver.prestart(spec, bad);
      await assert.rejects(driver.resume(pending, 10_000), (err: Error & { code?: string }) => {
        assert.equal(err.code, "RESUME_FAILED");
        // The error carries what the VMM said, not only the broken socket its death shows as first.
        if (name === "qemu") assert.match(err.message, /QEMU stderr: .*qemu-system-x86_64: /);
        return true;
      });
      assert.equal(alive(pending.pid), false);
    });

    test("a state stream whose end is read only after the VMM has loaded it still resumes", async () => {
      // The VMM closes its end of the stream once the state is loaded. On a busy gateway (at start-up) the
      // file's end could be read only after that, and the clone, loaded fine, was killed for a "premature
      // close". A FIFO held open after the last byte makes that order certain.
      const late = { ...snapshot, statePath: join(dir, "state.fifo") };
      await run("mkfifo", [late.statePath]);
      const writer = spawn("sh", ["-c", '{ cat "$0"; sleep 1; } > "$1"', snapshot.statePath, late.statePath], { stdio: "ignore" });
      const writerDone = new Promise((resolve) => writer.once("exit", resolve));
      try {
        const vm = await driver.resume(await driver.prestart(spec, late), 20_000);
        assert.equal((await vm.channel.ping(10_000)).serverAlive, true);
        await vm.kill("test over");
      } finally {
        writer.kill(); // it may still block opening the FIFO if nothing read it
        await writerDone;
      }
    });
  });
}
