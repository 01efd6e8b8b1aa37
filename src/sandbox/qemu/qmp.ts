import type { Socket } from "node:net";
import { QmpError, QmpTimeoutError, SnapshotError, VmmExitedError } from "../errors.js";
import { FrameDecoder } from "../../../sandbox/agent/protocol.js";

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
}

/** QMP replies are small; anything larger than this is not QEMU talking. */
const MAX_QMP_LINE = 1024 * 1024;

/**
 * A QEMU Machine Protocol client over a socketpair with QEMU (vmm-process.ts): one command at a time is
 * not required, replies are paired with commands by `id`, and every command has a deadline so a wedged
 * QEMU cannot hang a caller.
 */
export class QmpClient {
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly eventListeners = new Set<(event: QmpEvent) => void>();
  private closedError: Error | undefined;

  private constructor(private readonly socket: Socket) {}

  /** Over QEMU's end of a connected socket: waits for the greeting and leaves capability negotiation mode. */
  static async open(socket: Socket, timeoutMs: number): Promise<QmpClient> {
    const client = new QmpClient(socket);
    const greeting = client.waitForGreeting(timeoutMs);
    client.listen();
    await greeting;
    await client.execute("qmp_capabilities", undefined, timeoutMs);
    return client;
  }

  private greetingResolve: (() => void) | undefined;

  private waitForGreeting(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new QmpTimeoutError(`no QMP greeting within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.greetingResolve = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private listen(): void {
    const decoder = new FrameDecoder(MAX_QMP_LINE);
    this.socket.on("data", (chunk: Buffer) => {
      let messages: unknown[];
      try {
        messages = decoder.push(chunk);
      } catch (err) {
        this.fail(new QmpError("QMP sent an oversized line", { cause: err }));
        return;
      }
      for (const message of messages) this.dispatch(message as Record<string, unknown>);
    });
    this.socket.on("error", (err) => this.fail(new QmpError(`QMP socket error: ${err.message}`, { cause: err })));
    this.socket.on("close", () => this.fail(new VmmExitedError("QMP connection closed (QEMU exited)")));
  }

  private dispatch(message: Record<string, unknown>): void {
    if ("QMP" in message) {
      this.greetingResolve?.();
      return;
    }
    if (typeof message.event === "string") {
      for (const listener of this.eventListeners) listener(message as unknown as QmpEvent);
      return;
    }
    const id = typeof message.id === "string" ? message.id : undefined;
    const pending = id ? this.pending.get(id) : undefined;
    if (!id || !pending) return;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    if ("error" in message) {
      const error = message.error as { class?: string; desc?: string };
      pending.reject(new QmpError(`QMP ${error.class ?? "error"}: ${error.desc ?? "unknown"}`));
    } else {
      pending.resolve(message.return);
    }
  }

  private fail(error: Error): void {
    if (this.closedError) return;
    this.closedError = error;
    for (const [, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
    this.pending.clear();
    this.socket.destroy();
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = `q${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpTimeoutError(`QMP command ${command} got no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.socket.write(JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id }) + "\n");
    });
  }

  onEvent(listener: (event: QmpEvent) => void): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  /** Polls `query-status` until the VM leaves `status`, or fails after the deadline. */
  async waitWhileStatus(status: string, timeoutMs: number, pollMs = 2): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { status: now } = await this.execute<{ status: string }>("query-status", undefined, timeoutMs);
      if (now !== status) return now;
      if (Date.now() > deadline) {
        throw new QmpTimeoutError(`VM still ${status} after ${timeoutMs} ms`);
      }
      await new Promise((r) => setTimeout(r, pollMs));
    }
  }

  /** Polls `query-migrate` until the migration completes; fails on `failed` or the deadline. */
  async waitForMigration(timeoutMs: number, pollMs = 2): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const info = await this.execute<{ status?: string; "error-desc"?: string }>("query-migrate", undefined, timeoutMs);
      if (info.status === "completed") return;
      if (info.status === "failed" || info.status === "cancelled") {
        throw new SnapshotError(`migration ${info.status}: ${info["error-desc"] ?? "no reason given"}`);
      }
      if (Date.now() > deadline) throw new QmpTimeoutError(`migration not done after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, pollMs));
    }
  }

  close(): void {
    this.fail(new VmmExitedError("QMP client closed"));
  }
}
