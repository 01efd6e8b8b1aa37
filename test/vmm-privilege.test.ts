import assert from "node:assert/strict";
import { mcpPreparation } from "../src/router/catalog.js";
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { loadManifests } from "../src/config/load.js";
import { sandboxUnits } from "../src/config/sandbox-unit.js";
import { REPO_ROOT } from "../src/main.js";
import { serverChannel, type Vm, type VmSpec } from "../src/sandbox/driver.js";
import { prepareGuests } from "../src/sandbox/guest-images.js";
import { guestRequest } from "../src/sandbox/guest-rpc.js";
import { QemuDriver } from "../src/sandbox/qemu/qemu-driver.js";
import { setprivOptions, vmmIdentity, type VmmIdentity } from "../src/sandbox/qemu/vmm-user.js";
import { TemplateStore, type Template } from "../src/sandbox/template.js";
import { createLogger } from "../src/telemetry/log.js";
import { testConfig } from "./helpers.js";

const run = promisify(execFile);
const asRoot = process.getuid?.() === 0;

/** /proc/<pid>/status as a map of field -> value. */
async function procStatus(pid: number): Promise<Map<string, string>> {
  const text = await readFile(`/proc/${pid}/status`, "utf8");
  return new Map(text.split("\n").filter(Boolean).map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim()]));
}

/** Runs `argv` exactly as QEMU is started (same setpriv options); resolves to its exit code. */
async function asVmm(identity: VmmIdentity | undefined, argv: string[]): Promise<number> {
  try {
    await run("setpriv", [...setprivOptions(identity), "--", ...argv]);
    return 0;
  } catch (err) {
    return (err as { code: number }).code;
  }
}

async function guestSh(vm: Vm, command: string): Promise<{ stdout: string; exitCode: number }> {
  const result = await guestRequest(serverChannel(vm.channel, "exec"), "tools/call", { name: "run", arguments: { command } }, 30_000);
  return result.structuredContent as { stdout: string; exitCode: number };
}

describe("QEMU runs with the least it needs", { timeout: 300_000 }, () => {
  const config = testConfig();
  const driver = new QemuDriver({ runDir: config.runDir });
  let spec: VmSpec;
  let template: Template;
  let identity: VmmIdentity | undefined;
  let scratch: string;
  const vms: Vm[] = [];
  const clone = async () => {
    const vm = await driver.resume(await driver.prestart(spec, template.snapshot), 30_000);
    vms.push(vm);
    return vm;
  };

  before(async () => {
    const log = createLogger("silent");
    const [unit] = sandboxUnits(await loadManifests(join(REPO_ROOT, "servers"), ["exec"]), join(REPO_ROOT, "servers"));
    const plan = await prepareGuests([unit!], {
      build: { cacheDir: config.cacheDir, repoRoot: REPO_ROOT, progress: () => undefined },
      driver,
      accel: config.accel,
      runDir: config.runDir,
      log,
    });
    spec = await plan.specs.get(unit!.name)!;
    template = await new TemplateStore(driver, config.cacheDir, log, mcpPreparation).ensure(unit!, spec, () => undefined);
    identity = await vmmIdentity();
    scratch = await mkdtemp(join(config.cacheDir, "privilege-test-"));
  });
  after(async () => {
    await Promise.allSettled(vms.map((vm) => vm.kill("test over")));
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  test("a clone's QEMU is unprivileged: its own user when started as root, seccomp on, no_new_privs, no capabilities", async () => {
    const vm = await clone();
    const status = await procStatus(vm.pid);
    const uid = String(asRoot ? identity!.uid : process.getuid!());
    const gid = String(asRoot ? identity!.gid : process.getgid!());
    assert.deepEqual(status.get("Uid")!.split(/\s+/), [uid, uid, uid, uid], "real, effective, saved and filesystem uid");
    assert.deepEqual(status.get("Gid")!.split(/\s+/), [gid, gid, gid, gid]);
    if (asRoot) {
      assert.notEqual(uid, "0");
      assert.ok(!status.get("Groups")!.split(/\s+/).includes("0"), `supplementary groups: ${status.get("Groups")}`);
      assert.equal(BigInt(`0x${status.get("CapBnd")}`), 0n, "the bounding set is empty");
    }
    assert.equal(status.get("Seccomp"), "2", "a seccomp filter is installed");
    assert.equal(status.get("NoNewPrivs"), "1");
    for (const set of ["CapInh", "CapPrm", "CapEff", "CapAmb"]) assert.equal(BigInt(`0x${status.get(set)}`), 0n, set);
  });

  test("no host file is shared with the guest: no shared filesystem, read-only disks, nothing else from the host", async () => {
    const vm = await clone();
    const argv = (await readFile(`/proc/${vm.pid}/cmdline`, "utf8")).split("\0");
    const joined = argv.join(" ");
    for (const shared of ["-virtfs", "-fsdev", "9p", "virtiofs", "vhost-user", "-hda", "-cdrom", "-pflash", "-mtdblock", "-sd"]) {
      assert.ok(!joined.includes(shared), `QEMU argv must not contain ${shared}`);
    }
    const drives = argv.filter((_, i) => argv[i - 1] === "-drive");
    assert.equal(drives.length, 2);
    for (const drive of drives) assert.match(drive, /(^|,)readonly=on(,|$)/);
    assert.ok(argv.some((a, i) => argv[i - 1] === "-sandbox" && a.startsWith("on,")));
    // What the guest sees: two read-only disks, an RNG and the console, nothing else (virtio ids 2, 4, 3).
    const devices = await guestSh(vm, "cat /sys/bus/virtio/devices/*/device");
    assert.deepEqual(devices.stdout.trim().split(/\s+/).sort(), ["0x0002", "0x0002", "0x0003", "0x0004"]);
    const ro = await guestSh(vm, "cat /sys/block/vda/ro /sys/block/vdb/ro; echo x > /dev/vda");
    assert.deepEqual(ro.stdout.trim().split(/\s+/), ["1", "1"]);
    assert.notEqual(ro.exitCode, 0, "writing a disk must fail");
  });

  test("the seccomp filter is in force: a migration that would start a process kills QEMU instead", async () => {
    const vm = await clone();
    const marker = join(tmpdir(), `mcpv-seccomp-${process.pid}`);
    const qmp = (vm as unknown as { qmp: { execute(c: string, a?: object): Promise<unknown> } }).qmp;
    await qmp.execute("migrate", { uri: `exec:touch ${marker}` }).catch(() => undefined);
    const exit = await vm.exited;
    assert.equal(exit.signal, "SIGSYS", `QEMU must be killed by its filter, got ${exit.reason}`);
    await assert.rejects(stat(marker), "no process may have run");
  });

  test("as the VMM user nothing of the gateway's is reachable: secrets, other files in the cache, the run directory, the images", { skip: !asRoot && "QEMU runs as the gateway's own user" }, async () => {
    const secret = join(scratch, "secret");
    await writeFile(secret, "gateway secret\n", { mode: 0o600 });
    assert.notEqual(await asVmm(identity, ["cat", "/etc/shadow"]), 0, "/etc/shadow");
    assert.notEqual(await asVmm(identity, ["cat", secret]), 0, "a 0600 file of the gateway");
    assert.notEqual(await asVmm(identity, ["ls", config.cacheDir]), 0, "the cache directory");
    assert.notEqual(await asVmm(identity, ["cat", template.snapshot.statePath]), 0, "a template's device state");
    assert.notEqual(await asVmm(identity, ["ls", config.runDir]), 0, "listing the run directory");
    assert.notEqual(await asVmm(identity, ["touch", join(config.runDir, "planted")]), 0, "creating a file in the run directory");
    for (const image of [spec.image.kernelPath, spec.image.rootfsPath, spec.image.layerPath]) {
      assert.notEqual(await asVmm(identity, ["sh", "-c", `echo x >> '${image}'`]), 0, `writing ${image}`);
    }
    // Processes of other users (the gateway is root) are out of reach: no signals, no /proc/<pid>/mem.
    assert.notEqual(await asVmm(identity, ["kill", "-0", String(process.pid)]), 0, "signalling the gateway");
    assert.notEqual(await asVmm(identity, ["head", "-c1", `/proc/${process.pid}/environ`]), 0, "reading the gateway's environment");
    // Template RAM must stay openable read-write (QEMU 7.2 opens a private mapping so), but by nobody else.
    assert.equal((await stat(template.snapshot.ramPath)).mode & 0o007, 0, "template RAM is not readable by others");
    assert.deepEqual(await readdir(scratch), ["secret"]);
  });

  test("a template resume and a suspend to disk and resume keep working under the filter", async () => {
    const vm = await clone();
    await guestSh(vm, "echo kept-across-suspend > /tmp/state");
    const statePath = join(scratch, "suspended.gz");
    await driver.suspend(vm, statePath);
    const resumed = await driver.resume(await driver.prestart(spec, template.snapshot), 30_000, statePath);
    vms.push(resumed);
    assert.equal((await guestSh(resumed, "cat /tmp/state")).stdout.trim(), "kept-across-suspend");
  });
});
