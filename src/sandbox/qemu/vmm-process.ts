import { spawn, type ChildProcess } from "node:child_process";
import { open, type FileHandle } from "node:fs/promises";
import type { Socket } from "node:net";
import type { Readable } from "node:stream";
import type { VmExit } from "../driver.js";
import { VmmStartError } from "../errors.js";
import { TailBuffer } from "./tail-buffer.js";
import { grantToVmm, prepareRunRoot, setprivOptions, vmmIdentity } from "./vmm-user.js";

export const QEMU_BINARY = "qemu-system-x86_64";
const TAIL_BYTES = 16 * 1024;
/** How long an exit waits for the last of QEMU's stdout/stderr (pipes only QEMU writes, so EOF comes at once). */
const DRAIN_MS = 500;

/**
 * Descriptors QEMU inherits. QMP, the agent channel and the incoming migration stream are socketpairs,
 * so QEMU listens on no path and the gateway connects to none: a path in a directory QEMU could write
 * is a path a compromised QEMU could swap for a symlink to some other socket of the host.
 */
export const QMP_FD = 3;
export const AGENT_FD = 4;
export const MIGRATION_IN_FD = 5;
/** The egress port's socketpair; every QEMU inherits it, only guests with egress have a device on it. */
export const EGRESS_FD = 6;
const FIRST_FILE_FD = 7;

/** The files QEMU opens. It is handed them open and opens `/proc/self/fd/N`, so it needs no directory. */
export interface VmmFiles {
  kernel: string;
  initrd: string;
  rootfs: string;
  layer: string;
  /** Guest RAM: the only one QEMU opens for writing (7.2 does so even for a private mapping). */
  ram: string;
}

/**
 * One QEMU process. QEMU is started through `setpriv` (vmm-user.ts): as an unprivileged user when the
 * gateway is root, with no_new_privs, and with `--pdeathsig KILL`, so the kernel kills it if the gateway
 * dies, even by SIGKILL: no VM outlives the process that owns it.
 */
export class VmmProcess {
  readonly console = new TailBuffer(TAIL_BYTES);
  readonly stderr = new TailBuffer(TAIL_BYTES);
  readonly exited: Promise<VmExit>;
  private exitReason = "";
  private exitListeners = new Set<(exit: VmExit) => void>();
  private consoleListeners = new Set<(text: string) => void>();

  private constructor(
    readonly id: string,
    /** Where the gateway listens for this VM's outgoing migrations (prepared by vmm-user.ts). */
    readonly runRoot: string,
    private readonly child: ChildProcess,
  ) {
    child.stdout!.on("data", (chunk: Buffer) => {
      this.console.push(chunk);
      if (this.consoleListeners.size) for (const l of this.consoleListeners) l(chunk.toString("utf8"));
    });
    child.stderr!.on("data", (chunk: Buffer) => this.stderr.push(chunk));
    // QEMU closes its end once it has loaded the state, and with bytes unread when a load fails or it
    // dies, which shows here as EPIPE or ECONNRESET; migrate-incoming's answer and QEMU's exit already
    // report a failure, so it is ignored (qemu-driver.ts feedState).
    this.migrationIn.on("error", () => undefined);
    this.exited = new Promise<VmExit>((resolve) => {
      child.once("exit", async (code, signal) => {
        // What QEMU wrote just before it died may still be in the pipes when its exit is reaped.
        await drained([child.stdout!, child.stderr!], DRAIN_MS);
        const exit: VmExit = {
          code,
          signal,
          reason: this.exitReason || (signal ? `QEMU killed by ${signal}` : `QEMU exited with code ${code}`),
          consoleTail: this.console.toString(),
          vmmStderrTail: this.stderr.toString(),
        };
        for (const l of this.exitListeners) l(exit);
        resolve(exit);
      });
    });
  }

  /** Starts QEMU with `args`, given the paths under which it finds `files` (descriptors it inherits). */
  static async start(id: string, runRoot: string, files: VmmFiles, args: (files: VmmFiles) => string[]): Promise<VmmProcess> {
    const as = await vmmIdentity();
    await prepareRunRoot(runRoot, as);
    const roles = Object.keys(files) as (keyof VmmFiles)[];
    const handles: FileHandle[] = [];
    try {
      for (const role of roles) {
        const handle = await open(files[role], "r");
        handles.push(handle);
        if (as) await grantToVmm(handle, role === "ram", as);
      }
      const inherited = Object.fromEntries(roles.map((role, i) => [role, `/proc/self/fd/${FIRST_FILE_FD + i}`])) as unknown as VmmFiles;
      const child = spawn("setpriv", [...setprivOptions(as), "--", QEMU_BINARY, ...args(inherited)], {
        stdio: ["ignore", "pipe", "pipe", "pipe", "pipe", "pipe", "pipe", ...handles.map((h) => h.fd)],
      });
      await new Promise<void>((resolve, reject) => {
        child.once("spawn", resolve);
        child.once("error", (err) =>
          reject(new VmmStartError(`cannot start ${QEMU_BINARY}: ${err.message}`, { cause: err })),
        );
      });
      return new VmmProcess(id, runRoot, child);
    } finally {
      // The child holds its own copies; QEMU reopens them through /proc/self/fd at start-up.
      await Promise.all(handles.map((h) => h.close()));
    }
  }

  get pid(): number {
    return this.child.pid!;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The gateway's end of the QMP socketpair. */
  get qmpSocket(): Socket {
    return this.child.stdio[QMP_FD] as Socket;
  }

  /** The gateway's end of the guest agent's virtio-serial port. */
  get agentSocket(): Socket {
    return this.child.stdio[AGENT_FD] as Socket;
  }

  /** The gateway's end of the egress port (unused by a guest without one). */
  get egressSocket(): Socket {
    return (this.child.stdio as unknown as Socket[])[EGRESS_FD]!;
  }

  /** Where a snapshot's stream is written for `migrate-incoming fd:5`. */
  get migrationIn(): Socket {
    return (this.child.stdio as unknown as Socket[])[MIGRATION_IN_FD]!;
  }

  onExit(listener: (exit: VmExit) => void): void {
    this.exitListeners.add(listener);
  }

  onConsole(listener: (text: string) => void): () => void {
    this.consoleListeners.add(listener);
    return () => this.consoleListeners.delete(listener);
  }

  /** SIGKILL: a guest has no state worth a graceful shutdown once the host decided to end it. */
  async kill(reason: string): Promise<void> {
    if (this.alive) {
      this.exitReason ||= reason;
      this.child.kill("SIGKILL");
    }
    await this.exited;
  }
}

/** Resolves when every stream has closed, or after `ms` at most. */
function drained(streams: Readable[], ms: number): Promise<void> {
  const pending = streams.filter((s) => !s.closed);
  if (!pending.length) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    let left = pending.length;
    for (const s of pending) {
      s.once("close", () => {
        if (--left === 0) {
          clearTimeout(timer);
          resolve();
        }
      });
    }
  });
}
