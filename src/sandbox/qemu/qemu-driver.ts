import { execFile } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { open, rename, rm, truncate, writeFile } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { promisify } from "node:util";
import { createGunzip, createGzip } from "node:zlib";
import type { BootedVm, GuestChannel, PendingVm, SandboxDriver, SnapshotFiles, Vm, VmExit, VmSpec } from "../driver.js";
import { AgentTimeoutError, BootTimeoutError, ResumeError, SandboxError, SnapshotError, SuspendError, VmmExitedError, VmmStartError } from "../errors.js";
import { AgentChannel } from "./agent-channel.js";
import { qemuArgs, type QemuLaunch } from "./argv.js";
import { QmpClient } from "./qmp.js";
import { privatePages } from "./private-pages.js";
import { filterRamStream, type DiffStats } from "./ram-diff-filter.js";
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
}

/** A VM that runs: the QEMU process, its QMP connection and the agent channel. */
class QemuVm implements BootedVm {
  constructor(
    readonly process: VmmProcess,
    readonly qmp: QmpClient,
    readonly agent: AgentChannel,
    readonly kernelRelease: string,
    /** The file guest RAM is mapped from (copy-on-write for clones). */
    readonly ramPath: string,
  ) {
    // A guest that breaks the channel (an oversized frame, a closed port) cannot be talked to any more.
    agent.onClose((error) => void this.kill(`agent channel failed: ${error.message}`));
  }

  get id(): string {
    return this.process.id;
  }

  get pid(): number {
    return this.process.pid;
  }

  get channel(): GuestChannel {
    return this.agent;
  }

  get exited(): Promise<VmExit> {
    return this.process.exited.then((exit) => {
      const server = this.agent.serverExit;
      return server ? { ...exit, serverExit: { code: server.code, signal: server.signal, stderrTail: server.stderrTail } } : exit;
    });
  }

  async kill(reason: string): Promise<void> {
    this.agent.close();
    this.qmp.close();
    await this.process.kill(reason);
  }
}

class QemuPendingVm implements PendingVm {
  constructor(
    readonly process: VmmProcess,
    readonly qmp: QmpClient,
    readonly agent: AgentChannel,
    readonly snapshot: SnapshotFiles,
  ) {}

  get id(): string {
    return this.process.id;
  }

  get pid(): number {
    return this.process.pid;
  }

  get exited(): Promise<VmExit> {
    return this.process.exited;
  }

  async kill(reason: string): Promise<void> {
    this.agent.close();
    this.qmp.close();
    await this.process.kill(reason);
  }
}

/** Races a step against the VMM's exit, so a QEMU that dies mid-step fails the step at once. */
async function whileAlive<T>(proc: VmmProcess, step: Promise<T>, what: string): Promise<T> {
  const died = proc.exited.then((exit) => {
    throw new VmmExitedError(
      `QEMU exited during ${what} (${exit.reason}): ${lastLine(exit.vmmStderrTail) || lastLine(exit.consoleTail) || "no output"}`,
    );
  });
  return Promise.race([step, died]);
}

function lastLine(text: string): string {
  return text.trim().split("\n").slice(-3).join(" | ");
}

/**
 * Ends a VMM a step failed on and says what it left behind: how it ended, and the tails of its stderr
 * and of the guest console. A QEMU that dies shows first as a broken socket (QMP `read ECONNRESET` or a
 * closed connection) before its exit is reaped, and that alone does not say why it died.
 */
async function endWithReport(proc: VmmProcess, reason: string): Promise<string> {
  await proc.kill(reason);
  const exit = await proc.exited;
  const ended = exit.signal ? `killed by ${exit.signal}` : `exited with code ${exit.code}`;
  // A QEMU the gateway ended says why (a kill may be recorded for a QEMU that had already exited, so
  // only a SIGKILL counts as the gateway's).
  const ours = exit.signal === "SIGKILL" && !exit.reason.startsWith("QEMU ");
  const why = !ours ? "" : exit.reason === reason ? " by the gateway after the failure" : ` by the gateway (${exit.reason})`;
  const parts = [`QEMU ${ended}${why}`];
  const stderr = tail(exit.vmmStderrTail);
  const guest = tail(exit.consoleTail);
  parts.push(`QEMU stderr: ${stderr || "(empty)"}`);
  if (guest) parts.push(`console: ${guest}`);
  return parts.join("; ");
}

/** The last lines of `text`, at most ~1 KiB, on one line. */
function tail(text: string, lines = 8, chars = 1024): string {
  const joined = text.trim().split("\n").slice(-lines).map((l) => l.trim()).filter(Boolean).join(" | ");
  return joined.length > chars ? `…${joined.slice(-chars)}` : joined;
}

/** `err` with what the VMM left behind appended; the same class, so callers still see which step failed. */
function withReport(err: unknown, report: string, fallback: new (message: string, options?: { cause?: unknown }) => SandboxError): SandboxError {
  if (!(err instanceof SandboxError)) return new fallback(`${messageOf(err)} (${report})`, { cause: err });
  err.message = `${err.message} (${report})`;
  return err;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class QemuDriver implements SandboxDriver {
  readonly name = "qemu";
  private cachedVersion: Promise<string> | undefined;

  constructor(private readonly options: QemuDriverOptions) {}

  version(): Promise<string> {
    this.cachedVersion ??= run(QEMU_BINARY, ["--version"]).then(({ stdout }) => stdout.split("\n")[0]!.trim());
    return this.cachedVersion;
  }

  private start(id: string, spec: VmSpec, ramPath: string, ramShared: boolean, incoming: boolean): Promise<VmmProcess> {
    return VmmProcess.start(id, this.options.runDir, vmmFiles(spec, ramPath), (files) => {
      const launch: QemuLaunch = { spec, files, ramShared, incoming };
      if (this.options.tcgTbSizeMiB !== undefined) launch.tcgTbSizeMiB = this.options.tcgTbSizeMiB;
      return qemuArgs(launch);
    });
  }

  /** Opens QMP and the agent channel; on any failure the QEMU process is killed, never leaked. */
  private async connect(proc: VmmProcess): Promise<{ qmp: QmpClient; agent: AgentChannel }> {
    try {
      const qmp = await whileAlive(proc, QmpClient.open(proc.qmpSocket, CONNECT_TIMEOUT_MS), "QMP connect");
      return { qmp, agent: new AgentChannel(proc.agentSocket) };
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
    const { qmp, agent } = await this.connect(proc);
    try {
      const hello = await whileAlive(proc, agent.waitForHello(helloMs), "cold boot");
      return new QemuVm(proc, qmp, agent, hello.kernel, ramPath);
    } catch (err) {
      await proc.kill("cold boot failed");
      if (err instanceof AgentTimeoutError) {
        throw new BootTimeoutError(`guest agent did not come up within ${helloMs} ms; console: ${lastLine(proc.console.toString()) || "(empty)"}`, { cause: err });
      }
      throw err;
    }
  }

  async snapshot(vm: Vm, statePath: string): Promise<void> {
    if (!(vm instanceof QemuVm)) throw new TypeError("QemuDriver.snapshot needs a VM it started");
    const tmp = `${statePath}.tmp-${process.pid}`;
    try {
      // Run the agent's resume path once so its code is compiled in the snapshot: V8 compiles functions
      // lazily, and under TCG compiling them on every clone's first resume costs ~100 ms.
      await vm.agent.resume(10_000);
      await vm.agent.ping(10_000);
      // RAM lives in the shared file, so only device state goes into the stream (x-ignore-shared).
      await vm.qmp.execute("migrate-set-capabilities", { capabilities: [{ capability: "x-ignore-shared", state: true }] });
      await vm.qmp.execute("stop");
      await migrateOut(vm, "snapshot", 60_000, (stream) => pipeline(stream, createWriteStream(tmp)));
      const fh = await open(tmp, "r");
      await fh.sync();
      await fh.close();
    } catch (err) {
      await vm.kill("snapshot failed");
      throw err instanceof SandboxError ? err : new SnapshotError(`snapshot failed: ${String(err)}`, { cause: err });
    }
    await vm.kill("snapshot taken");
    await rename(tmp, statePath);
  }

  async prestart(spec: VmSpec, snapshot: SnapshotFiles): Promise<PendingVm> {
    const proc = await this.start(`vm-${randomUUID().slice(0, 8)}`, spec, snapshot.ramPath, false, true);
    const { qmp, agent } = await this.connect(proc);
    try {
      await whileAlive(proc, qmp.execute("migrate-set-capabilities", { capabilities: [{ capability: "x-ignore-shared", state: true }] }), "prestart");
    } catch (err) {
      agent.close();
      const report = await endWithReport(proc, "prestart failed");
      throw withReport(err, report, VmmStartError);
    }
    return new QemuPendingVm(proc, qmp, agent, snapshot);
  }

  suspend(vm: Vm, statePath: string): Promise<{ bytes: number; pages: number }> {
    return suspendToFile(vm, statePath);
  }

  async resume(pending: PendingVm, timeoutMs: number, suspendedState?: string): Promise<Vm> {
    if (!(pending instanceof QemuPendingVm)) throw new TypeError("QemuDriver.resume needs a VMM it prestarted");
    const { process: proc, qmp, agent, snapshot } = pending;
    try {
      feedState(proc.migrationIn, suspendedState ?? snapshot.statePath, suspendedState !== undefined, (err) =>
        void proc.kill(`state stream failed: ${err.message}`),
      );
      await whileAlive(proc, qmp.execute("migrate-incoming", { uri: `fd:${MIGRATION_IN_FD}` }), "state load");
      // Without -S QEMU runs the guest as soon as the state is loaded: no `cont` round trip needed.
      const status = await whileAlive(proc, qmp.waitWhileStatus("inmigrate", timeoutMs), "state load");
      if (status !== "running") await qmp.execute("cont");
      await whileAlive(proc, agent.resume(timeoutMs), "agent resume");
      return new QemuVm(proc, qmp, agent, "", snapshot.ramPath);
    } catch (err) {
      agent.close();
      const report = await endWithReport(proc, "resume failed");
      throw new ResumeError(`could not resume from ${suspendedState ? "saved state" : "snapshot"}: ${messageOf(err)} (${report})`, { cause: err });
    }
  }
}

/**
 * Streams saved device state (gzip'd for a suspended session) into QEMU's incoming-migration descriptor.
 *
 * QEMU closes its end as soon as it has loaded the state, which can be before this side has seen the
 * file's end: that takes one more read on libuv's pool, and a busy event loop (spawns and template
 * hashing at gateway start) delays it past a load that takes a few milliseconds. So QEMU's end
 * closing, or failing, only stops the feed: `stream.pipeline` would call it a premature close, and killing
 * QEMU for that killed clones that had loaded fine. Whether the load worked is for `migrate-incoming`,
 * `query-status` and QEMU's exit to say. A source that cannot be read does fail (`onSourceError`) at
 * once, since QEMU would otherwise wait for the rest of the stream until the resume deadline.
 */
function feedState(into: Socket, path: string, gzipped: boolean, onSourceError: (err: Error) => void): void {
  if (into.destroyed) return; // QEMU is gone already: the resume's next step says so
  let stopped = false;
  const failed = (err: Error) => {
    if (stopped) return;
    stopped = true;
    onSourceError(err);
  };
  const file = createReadStream(path).on("error", failed);
  const source: Readable = gzipped ? file.pipe(createGunzip()).on("error", failed) : file;
  into.once("close", () => {
    stopped = true;
    file.destroy();
    source.destroy();
  });
  // Errors on `into` (EPIPE, ECONNRESET once QEMU closed its end) are handled by VmmProcess.
  source.pipe(into);
}

/**
 * Suspends a clone to `statePath`: stop, find the pages it changed, and migrate through a filter that
 * keeps only those (plus device state), gzip'd. The result resumes on the same template. The VM is
 * ended after; on failure it is let run again and the error rethrown, so nothing is lost.
 */
export async function suspendToFile(vm: Vm, statePath: string): Promise<{ bytes: number; pages: number }> {
  if (!(vm instanceof QemuVm)) throw new TypeError("suspendToFile needs a VM QemuDriver started");
  const tmp = `${statePath}.tmp-${process.pid}`;
  await vm.qmp.execute("stop");
  try {
    const dirty = await privatePages(vm.pid, vm.ramPath);
    const stats = await migrateOut(vm, "suspend", 120_000, async (stream) => {
      const gzip = createGzip({ level: 1 });
      const written = pipeline(gzip, createWriteStream(tmp));
      const kept = await filterRamStream(stream, gzip, "mem", (offset) => dirty[offset / 4096] === 1);
      gzip.end();
      await written;
      return kept;
    });
    const fh = await open(tmp, "r");
    await fh.sync();
    const { size } = await fh.stat();
    await fh.close();
    await rename(tmp, statePath);
    await vm.kill("suspended to disk");
    return { bytes: size, pages: stats.keptPages };
  } catch (err) {
    await rm(tmp, { force: true });
    await vm.qmp.execute("cont").catch(() => undefined);
    throw new SuspendError(`suspend failed: ${messageOf(err)}`, { cause: err });
  }
}

/** The files a VMM opens for `spec`, with guest RAM mapped from `ramPath`. */
function vmmFiles(spec: VmSpec, ramPath: string): VmmFiles {
  const { kernelPath, initrdPath, rootfsPath, layerPath } = spec.image;
  return { kernel: kernelPath, initrd: initrdPath, rootfs: rootfsPath, layer: layerPath, ram: ramPath };
}

/**
 * Migrates a stopped VM out into `consume`. QEMU 7.2 can only migrate out to a socket it connects to
 * (`exec:` needs fork, which its seccomp filter forbids; `fd:` needs a descriptor passed over QMP, which
 * node cannot send), so the gateway listens on an unguessable name in the run root, which only root and
 * the VMM group may enter (vmm-user.ts), and takes the first connection only.
 */
async function migrateOut<T>(vm: QemuVm, what: string, timeoutMs: number, consume: (stream: Socket) => Promise<T>): Promise<T> {
  const path = join(vm.process.runRoot, `${vm.id}-${randomBytes(16).toString("hex")}.sock`);
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.listen({ path, writableAll: true }, resolve).once("error", reject));
  try {
    const consumed = new Promise<T>((resolve, reject) => {
      server.once("connection", (stream) => {
        server.close();
        consume(stream).then(resolve, reject);
      });
    });
    consumed.catch(() => undefined); // awaited below; a failed migration may make it fail first
    await vm.qmp.execute("migrate-set-parameters", { "max-bandwidth": 64 * 1024 * 1024 * 1024 });
    await vm.qmp.execute("migrate", { uri: `unix:${path}` });
    await whileAlive(vm.process, vm.qmp.waitForMigration(timeoutMs), what);
    return await consumed;
  } finally {
    server.close();
  }
}
