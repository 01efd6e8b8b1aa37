/**
 * The agent's byte channel to the host: the virtio-serial port named AGENT_PORT_NAME inside a guest,
 * or the process's own stdin/stdout for tests on the host (MCPVISOR_AGENT_DEVICE=stdio).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { AGENT_PORT_NAME } from "./protocol.js";

export interface Channel {
  /** Begins reading. The next read waits for `onChunk`'s promise, so a slow consumer slows the host. */
  start(onChunk: (chunk: Buffer) => Promise<void> | void, onEnd: () => void): void;
  /** Queues bytes for the host; resolves when they were written (or dropped, see `close`). */
  write(data: string | Buffer): Promise<void>;
  /** Bytes queued but not yet written: the caller pauses its producers above a limit. */
  pendingBytes(): number;
  /** Resolves when everything queued so far is written, or after `timeoutMs`. */
  flush(timeoutMs: number): Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Finds /dev/<port> whose /sys/class/virtio-ports/<port>/name is `name`, or null. */
export function findVirtioPort(name = AGENT_PORT_NAME, sysDir = "/sys/class/virtio-ports"): string | null {
  let entries: string[];
  try {
    entries = fs.readdirSync(sysDir);
  } catch {
    return null;
  }
  for (const entry of entries) {
    try {
      if (fs.readFileSync(path.join(sysDir, entry, "name"), "utf8").trim() === name) return `/dev/${entry}`;
    } catch {
      // A port without a name file (or one that vanished): not ours.
    }
  }
  return null;
}

/**
 * The port appears once virtio_console has probed, which the initramfs did before switch_root; the
 * retry only covers a slow udev-less devtmpfs node creation.
 */
export async function openDeviceChannel(name = AGENT_PORT_NAME, timeoutMs = 10_000): Promise<Channel> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const dev = findVirtioPort(name);
    if (dev) {
      try {
        const fd = fs.openSync(dev, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
        return new DeviceChannel(fd);
      } catch (err) {
        if (Date.now() > deadline) throw err;
      }
    } else if (Date.now() > deadline) {
      throw new Error(`virtio-serial port "${name}" not found under /sys/class/virtio-ports`);
    }
    await sleep(20);
  }
}

/**
 * A virtio console port is a character device: node's net.Socket refuses it (libuv sees a "file"), so
 * reads and writes go through the fs thread pool with a blocking fd. Kernel behaviour this relies on
 * (drivers/char/virtio_console.c): read() returns 0 while the host side is not connected, write() blocks
 * until it is, and one write() takes at most 32 KiB, so writes loop over partial counts.
 */
class DeviceChannel implements Channel {
  private queue: Buffer[] = [];
  private enqueued = 0; // bytes ever queued
  private written = 0; // bytes ever written
  private writing = false;
  private waiters: { upTo: number; resolve: () => void }[] = [];

  constructor(private readonly fd: number) {}

  start(onChunk: (chunk: Buffer) => Promise<void> | void): void {
    void this.readLoop(onChunk);
  }

  private async readLoop(onChunk: (chunk: Buffer) => Promise<void> | void): Promise<void> {
    const buf = Buffer.allocUnsafe(64 * 1024);
    let idle = 0;
    for (;;) {
      let n: number;
      try {
        n = await new Promise<number>((resolve, reject) =>
          fs.read(this.fd, buf, 0, buf.length, null, (err, bytes) => (err ? reject(err) : resolve(bytes))),
        );
      } catch (err) {
        // EAGAIN/EIO and friends while the host end changes state: back off, never crash.
        logAgent(`port read: ${(err as Error).message}`);
        await sleep(50);
        continue;
      }
      if (n === 0) {
        // Host not connected (QEMU's socket chardev has no client): poll until it connects. Short first
        // waits because after a snapshot resume the host connects within milliseconds.
        await sleep(idle < 50 ? 2 : 20);
        idle++;
        continue;
      }
      idle = 0;
      await onChunk(Buffer.from(buf.subarray(0, n)));
    }
  }

  write(data: string | Buffer): Promise<void> {
    const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
    this.queue.push(bytes);
    this.enqueued += bytes.length;
    const done = this.waitFor(this.enqueued);
    if (!this.writing) void this.writeLoop();
    return done;
  }

  private waitFor(upTo: number): Promise<void> {
    if (this.written >= upTo) return Promise.resolve();
    return new Promise<void>((resolve) => this.waiters.push({ upTo, resolve }));
  }

  private async writeLoop(): Promise<void> {
    this.writing = true;
    while (this.queue.length > 0) {
      const batch = Buffer.concat(this.queue);
      this.queue = [];
      let off = 0;
      while (off < batch.length) {
        try {
          const n = await new Promise<number>((resolve, reject) =>
            fs.write(this.fd, batch, off, batch.length - off, null, (err, written) =>
              err ? reject(err) : resolve(written),
            ),
          );
          off += n;
          this.written += n;
        } catch (err) {
          // EAGAIN/EPIPE while the host is away: wait for it instead of losing frames.
          logAgent(`port write: ${(err as Error).message}`);
          await sleep(50);
        }
      }
      const ready = this.waiters.filter((w) => w.upTo <= this.written);
      this.waiters = this.waiters.filter((w) => w.upTo > this.written);
      for (const w of ready) w.resolve();
    }
    this.writing = false;
  }

  pendingBytes(): number {
    return this.enqueued - this.written;
  }

  flush(timeoutMs: number): Promise<void> {
    return Promise.race([this.waitFor(this.enqueued), sleep(timeoutMs)]);
  }
}

/** Test mode: frames on stdin/stdout, so the agent can run on the host under node's test runner. */
export function openStdioChannel(): Channel {
  let pending = 0;
  const write = (data: string | Buffer) =>
    new Promise<void>((resolve) => {
      const len = Buffer.byteLength(data);
      pending += len;
      process.stdout.write(data, () => {
        pending -= len;
        resolve();
      });
    });
  return {
    start(onChunk, onEnd) {
      process.stdin.on("data", (chunk: Buffer) => {
        const result = onChunk(chunk);
        if (result) {
          process.stdin.pause();
          void result.finally(() => process.stdin.resume());
        }
      });
      process.stdin.on("end", onEnd);
    },
    write,
    pendingBytes: () => pending,
    flush: (timeoutMs) => Promise.race([write(""), sleep(timeoutMs)]),
  };
}

/** The agent's own diagnostics go to stderr, which is the guest console (serial) in a VM. */
export function logAgent(line: string): void {
  process.stderr.write(`mcpvisor-agent: ${line}\n`);
}
