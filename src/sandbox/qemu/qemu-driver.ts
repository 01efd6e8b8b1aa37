import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { truncate, writeFile } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import { promisify } from "node:util";
import type { Logger } from "../../telemetry/log.js";
import { writeAtomically } from "../atomic-file.js";
import type { BootedVm, EgressAttachment, EgressHost, PendingVm, SandboxDriver, SnapshotFiles, Vm, VmSpec } from "../driver.js";
import { AgentTimeoutError, BootTimeoutError, ResumeError, SandboxError, SnapshotError, VmmStartError } from "../errors.js";
import { AgentChannel } from "./agent-channel.js";
import { qemuArgs, TCG_CPU, type QemuLaunch } from "./argv.js";
import { endWithReport, messageOf, tail, whileAlive, withReport } from "./failure-report.js";
import { QmpClient } from "./qmp.js";
import { BootedQemuVm, QemuVm } from "./qemu-vm.js";
import { feedState, migrateOut, suspendToFile } from "./suspend.js";
import { MIGRATION_IN_FD, QEMU_BINARY, VmmProcess, type VmmFiles } from "./vmm-process.js";

const run = promisify(execFile);
/** QMP greets within ~200 ms of QEMU starting; this bound is for a loaded host. */
const CONNECT_TIMEOUT_MS = 10_000;
/** The agent says hello ~4 s after QEMU starts under TCG (well under 1 s with KVM); 30 s allows a loaded host. */
const HELLO_DEADLINE_MS = 30_000;

export interface QemuDriverOptions {
  /** Directory for the sockets outgoing migrations go to; unix socket paths are limited to 108 bytes, so keep it short. */
  runDir: string;
  tcgTbSizeMiB?: number;
  /** Where what guest agents report as failed (their `error` frames) is logged; not logged without it. */
  log?: Logger;
  /** Serves the egress ports of VMs whose spec names an `egressServer`; without it they get none. */
  egress?: EgressHost;
}

export class QemuDriver implements SandboxDriver {
  readonly name = "qemu";
  private cachedVersion: Promise<string> | undefined;

  constructor(private readonly options: QemuDriverOptions) {}

  version(): Promise<string> {
    // With the guest CPU model: a snapshot only loads into the CPU it was taken on.
    this.cachedVersion ??= run(QEMU_BINARY, ["--version"]).then(({ stdout }) => `${stdout.split("\n")[0]!.trim()}; tcg cpu ${TCG_CPU}`);
    return this.cachedVersion;
  }

  private start(id: string, spec: VmSpec, ramPath: string, ramShared: boolean, incoming: boolean): Promise<VmmProcess> {
    return VmmProcess.start(id, this.options.runDir, vmmFiles(spec, ramPath), (files) => {
      const launch: QemuLaunch = { spec, files, ramShared, incoming };
      if (this.options.tcgTbSizeMiB !== undefined) launch.tcgTbSizeMiB = this.options.tcgTbSizeMiB;
      return qemuArgs(launch);
    });
  }

  /** Opens QMP, the agent channel and the egress port; on any failure the QEMU process is killed, never leaked. */
  private async connect(proc: VmmProcess, spec: VmSpec): Promise<{ qmp: QmpClient; agent: AgentChannel; egress: EgressAttachment | undefined }> {
    try {
      const qmp = await whileAlive(proc, QmpClient.open(proc.qmpSocket, CONNECT_TIMEOUT_MS), "QMP connect");
      const log = this.options.log?.child({ vm: proc.id });
      const agent = new AgentChannel(proc.agentSocket, (message) => log?.warn({ agentError: message }, "guest agent reported an error"));
      const egress = spec.egressServer && this.options.egress ? this.options.egress.attach(spec.egressServer, proc.egressSocket, proc.id) : undefined;
      return { qmp, agent, egress };
    } catch (err) {
      const report = await endWithReport(proc, "start-up failed");
      throw withReport(err, report, VmmStartError);
    }
  }

  /**
   * QEMU 7.2 under TCG occasionally hangs at boot with no output at all (about one boot in seven in
   * measurements here), so a boot that shows no agent within HELLO_DEADLINE_MS is killed and tried again.
   */
  async boot(spec: VmSpec, ramPath: string, timeoutMs: number): Promise<BootedVm> {
    const attempts = 3;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.bootOnce(spec, ramPath, Math.min(timeoutMs, HELLO_DEADLINE_MS));
      } catch (err) {
        if (attempt >= attempts || !(err instanceof BootTimeoutError)) throw err;
      }
    }
  }

  private async bootOnce(spec: VmSpec, ramPath: string, helloMs: number): Promise<BootedVm> {
    await writeFile(ramPath, "");
    await truncate(ramPath, spec.memoryMiB * 1024 * 1024);
    const proc = await this.start(`boot-${randomUUID().slice(0, 8)}`, spec, ramPath, true, false);
    const { qmp, agent, egress } = await this.connect(proc, spec);
    try {
      // A hello from an agent of another protocol version fails here (AgentProtocolError), not retried.
      const hello = await whileAlive(proc, agent.waitForHello(helloMs), "cold boot");
      return new BootedQemuVm(proc, qmp, agent, egress, ramPath, hello.kernel).supervise();
    } catch (err) {
      await proc.kill("cold boot failed");
      if (err instanceof AgentTimeoutError) {
        throw new BootTimeoutError(`guest agent did not come up within ${helloMs} ms; console: ${tail(proc.console.toString(), 3) || "(empty)"}`, { cause: err });
      }
      throw err;
    }
  }

  async snapshot(vm: Vm, statePath: string): Promise<void> {
    const running = qemuVm(vm, "snapshot");
    try {
      // Run the agent's resume path once so its code is compiled in the snapshot: V8 compiles functions
      // lazily, and under TCG compiling them on every clone's first resume costs ~100 ms.
      await running.agent.resume(10_000);
      await running.agent.ping(10_000);
      // RAM lives in the shared file, so only device state goes into the stream (x-ignore-shared).
      await running.qmp.execute("migrate-set-capabilities", { capabilities: [{ capability: "x-ignore-shared", state: true }] });
      await running.qmp.execute("stop");
      await writeAtomically(statePath, (file) => migrateOut(running, "snapshot", 60_000, (stream) => pipeline(stream, file)));
    } catch (err) {
      await running.kill("snapshot failed");
      throw err instanceof SandboxError ? err : new SnapshotError(`snapshot failed: ${messageOf(err)}`, { cause: err });
    }
    await running.kill("snapshot taken");
  }

  async prestart(spec: VmSpec, snapshot: SnapshotFiles): Promise<PendingVm> {
    const proc = await this.start(`vm-${randomUUID().slice(0, 8)}`, spec, snapshot.ramPath, false, true);
    const { qmp, agent, egress } = await this.connect(proc, spec);
    try {
      await whileAlive(proc, qmp.execute("migrate-set-capabilities", { capabilities: [{ capability: "x-ignore-shared", state: true }] }), "prestart");
    } catch (err) {
      agent.close();
      egress?.close();
      const report = await endWithReport(proc, "prestart failed");
      throw withReport(err, report, VmmStartError);
    }
    return new QemuVm(proc, qmp, agent, egress, snapshot.ramPath, snapshot.statePath);
  }

  suspend(vm: Vm, statePath: string): Promise<{ bytes: number; pages: number }> {
    return suspendToFile(qemuVm(vm, "suspend"), statePath);
  }

  async resume(pending: PendingVm, timeoutMs: number, suspendedState?: string): Promise<Vm> {
    const vm = qemuVm(pending, "resume");
    const { process: proc, qmp, agent } = vm;
    try {
      feedState(proc.migrationIn, suspendedState ?? vm.templateStatePath!, suspendedState !== undefined, (err) =>
        void proc.kill(`state stream failed: ${err.message}`),
      );
      await whileAlive(proc, qmp.execute("migrate-incoming", { uri: `fd:${MIGRATION_IN_FD}` }), "state load");
      // Without -S QEMU runs the guest as soon as the state is loaded: no `cont` round trip needed.
      const status = await whileAlive(proc, qmp.waitWhileStatus("inmigrate", timeoutMs), "state load");
      if (status !== "running") await qmp.execute("cont");
      await whileAlive(proc, agent.resume(timeoutMs), "agent resume");
      return vm.supervise();
    } catch (err) {
      agent.close();
      const report = await endWithReport(proc, "resume failed");
      throw new ResumeError(`could not resume from ${suspendedState ? "saved state" : "snapshot"}: ${messageOf(err)} (${report})`, { cause: err });
    }
  }
}

function qemuVm(vm: PendingVm, op: string): QemuVm {
  if (!(vm instanceof QemuVm)) throw new TypeError(`QemuDriver.${op} needs a VM it started`);
  return vm;
}

/** The files a VMM opens for `spec`, with guest RAM mapped from `ramPath`. */
function vmmFiles(spec: VmSpec, ramPath: string): VmmFiles {
  const { kernelPath, initrdPath, rootfsPath, layerPath } = spec.image;
  return { kernel: kernelPath, initrd: initrdPath, rootfs: rootfsPath, layer: layerPath, ram: ramPath };
}
