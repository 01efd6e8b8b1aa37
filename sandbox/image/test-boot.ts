/**
 * Test support (not used by the product): boots a built image in QEMU exactly as the host driver does,
 * and speaks the agent protocol over the virtio-serial unix socket. Every boot has a deadline and the
 * QEMU process is always killed.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { FrameDecoder, encodeFrame, type HostFrame } from "../agent/protocol.js";

export interface BootFiles {
  kernelPath: string;
  initrdPath: string;
  rootfsPath: string;
  /** Omitted for the probe boot. */
  layerPath?: string;
}

export function qemuArgs(files: BootFiles, sock: string, extraAppend = ""): string[] {
  const append = `console=ttyS0 quiet panic=-1 mcpvisor.jitless=1${extraAppend ? ` ${extraAppend}` : ""}`;
  return [
    "-M", "microvm,acpi=on", "-accel", "tcg", "-m", "256M", "-smp", "1",
    "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-no-reboot",
    "-kernel", files.kernelPath, "-initrd", files.initrdPath, "-append", append,
    "-serial", "stdio",
    "-drive", `file=${files.rootfsPath},format=raw,if=none,id=base,readonly=on`, "-device", "virtio-blk-device,drive=base",
    ...(files.layerPath
      ? ["-drive", `file=${files.layerPath},format=raw,if=none,id=srv,readonly=on`, "-device", "virtio-blk-device,drive=srv"]
      : []),
    "-object", "rng-random,id=rng,filename=/dev/urandom", "-device", "virtio-rng-device,rng=rng",
    "-device", "virtio-serial-device", "-chardev", `socket,id=agent,path=${sock},server=on,wait=off`,
    "-device", "virtserialport,chardev=agent,name=mcpvisor.agent",
  ];
}

export type Frame = Record<string, unknown>;

export class BootedVm {
  readonly startedAt = Date.now();
  serial = "";
  readonly frames: { at: number; frame: Frame }[] = [];
  readonly exited: Promise<number | null>;
  private socket: net.Socket | null = null;
  private notify: (() => void)[] = [];
  private readonly decoder = new FrameDecoder();
  readonly dir: string;

  private constructor(
    readonly qemu: ChildProcess,
    readonly sock: string,
    dir: string,
  ) {
    this.dir = dir;
    qemu.stdout!.on("data", (c: Buffer) => {
      this.serial += c.toString("utf8");
      this.wake();
    });
    qemu.stderr!.on("data", (c: Buffer) => {
      this.serial += c.toString("utf8");
    });
    this.exited = new Promise((resolve) => qemu.on("exit", (code) => {
      this.wake();
      resolve(code);
    }));
  }

  static start(files: BootFiles, extraAppend = ""): BootedVm {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mcpvisor-boot-"));
    const sock = path.join(dir, "agent.sock");
    // Through setpriv --pdeathsig, like the gateway's QEMUs: a test process that is killed takes its VM along.
    const qemu = spawn("setpriv", ["--pdeathsig", "KILL", "--", "qemu-system-x86_64", ...qemuArgs(files, sock, extraAppend)], { stdio: ["ignore", "pipe", "pipe"] });
    return new BootedVm(qemu, sock, dir);
  }

  private wake(): void {
    for (const w of this.notify.splice(0)) w();
  }

  private async wait(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.notify.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /** Connects to the agent socket (QEMU creates it at start-up; retry until it exists). */
  async connect(deadline: number): Promise<void> {
    while (Date.now() < deadline) {
      try {
        this.socket = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect(this.sock);
          s.once("connect", () => resolve(s));
          s.once("error", reject);
        });
        this.socket.on("data", (c: Buffer) => {
          for (const f of this.decoder.push(c)) this.frames.push({ at: Date.now(), frame: f as Frame });
          this.wake();
        });
        this.socket.on("error", () => {});
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    throw new Error(`agent socket ${this.sock} not connectable; serial:\n${this.serial}`);
  }

  send(frame: HostFrame): void {
    this.socket!.write(encodeFrame(frame));
  }

  async waitFrame(pred: (f: Frame) => boolean, deadline: number): Promise<{ at: number; frame: Frame }> {
    for (;;) {
      const hit = this.frames.find((f) => pred(f.frame));
      if (hit) return hit;
      if (Date.now() >= deadline) {
        throw new Error(`timed out waiting for a frame; frames: ${JSON.stringify(this.frames.map((f) => f.frame)).slice(0, 1500)}\nserial:\n${this.serial.slice(-3000)}`);
      }
      await this.wait(Math.min(200, deadline - Date.now()));
    }
  }

  async waitSerial(re: RegExp, deadline: number): Promise<void> {
    while (!re.test(this.serial)) {
      if (Date.now() >= deadline) throw new Error(`timed out waiting for ${re} on serial:\n${this.serial.slice(-3000)}`);
      await this.wait(Math.min(200, deadline - Date.now()));
    }
  }

  /** Resolves with QEMU's exit code, or "timeout" if it was still running at the deadline. */
  async waitExit(deadline: number): Promise<number | null | "timeout"> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((r) => {
      timer = setTimeout(() => r("timeout"), Math.max(0, deadline - Date.now()));
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async kill(): Promise<void> {
    this.socket?.destroy();
    if (this.qemu.exitCode === null && this.qemu.signalCode === null) {
      this.qemu.kill("SIGKILL");
      await this.exited;
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
