import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { VmExit } from "../driver.js";
import { SandboxError } from "../errors.js";
import { QEMU_BINARY } from "./argv.js";
import { TailBuffer } from "./tail-buffer.js";

const TAIL_BYTES = 16 * 1024;

/**
 * One QEMU process and its run directory. QEMU is started through `setpriv --pdeathsig KILL`, so the
 * kernel kills it if the gateway dies, even by SIGKILL: no VM outlives the process that owns it.
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
    readonly runDir: string,
    private readonly child: ChildProcess,
  ) {
    child.stdout!.on("data", (chunk: Buffer) => {
      this.console.push(chunk);
      if (this.consoleListeners.size) for (const l of this.consoleListeners) l(chunk.toString("utf8"));
    });
    child.stderr!.on("data", (chunk: Buffer) => this.stderr.push(chunk));
    this.exited = new Promise<VmExit>((resolve) => {
      child.once("exit", (code, signal) => {
        const exit: VmExit = {
          code,
          signal,
          reason: this.exitReason || (signal ? `QEMU killed by ${signal}` : `QEMU exited with code ${code}`),
          consoleTail: this.console.toString(),
          vmmStderrTail: this.stderr.toString(),
        };
        for (const l of this.exitListeners) l(exit);
        void rm(runDir, { recursive: true, force: true }).catch(() => undefined);
        resolve(exit);
      });
    });
  }

  static async start(id: string, runRoot: string, args: (runDir: string) => string[]): Promise<VmmProcess> {
    const runDir = join(runRoot, id);
    await mkdir(runDir, { recursive: true, mode: 0o700 });
    const child = spawn("setpriv", ["--pdeathsig", "KILL", "--", QEMU_BINARY, ...args(runDir)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    await new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", (err) =>
        reject(new SandboxError("VMM_START_FAILED", `cannot start ${QEMU_BINARY}: ${err.message}`, { cause: err })),
      );
    });
    return new VmmProcess(id, runDir, child);
  }

  get pid(): number {
    return this.child.pid!;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
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
