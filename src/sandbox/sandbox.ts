import type { JsonRpcMessage } from "../../sandbox/agent/protocol.js";
import type { Vm, VmExit } from "./driver.js";
import { SandboxError } from "./errors.js";
import { Lifecycle, type SandboxState } from "./lifecycle.js";
import { events } from "../telemetry/events.js";

type RequestId = string | number;

export interface SandboxEvents {
  /** A message from the server in the guest: a response, a notification, or a server->client request. */
  message: (message: JsonRpcMessage, guestMs?: number) => void;
  /** A request that will never get a real answer (timeout, the guest died); the caller must be told. */
  requestFailed: (id: RequestId, error: SandboxError) => void;
  /** The sandbox is gone; `error` says why when it was not a deliberate destroy. */
  closed: (error: SandboxError | undefined) => void;
}

export interface SandboxTimings {
  /** How the sandbox was obtained: a clone resumed ahead of demand, or resumed for this caller. */
  source: "warm-pool" | "prestarted" | "cold-vmm";
  resumeMs: number;
}

/**
 * One clone of a server's template, leased to one client session. It tracks the requests in flight so
 * that none is left hanging: each has a deadline, and if the guest dies every one fails with a reason.
 */
export class Sandbox {
  readonly lifecycle = new Lifecycle("idle");
  private readonly inFlight = new Map<RequestId, NodeJS.Timeout>();
  private readonly listeners: { [K in keyof SandboxEvents]: Set<SandboxEvents[K]> } = {
    message: new Set(),
    requestFailed: new Set(),
    closed: new Set(),
  };
  private closing = false;

  constructor(
    readonly server: string,
    readonly vm: Vm,
    readonly timings: SandboxTimings,
    private readonly callTimeoutMs: number,
  ) {
    this.lifecycle.onTransition(({ from, to }) => events.sandboxTransition.publish({ server, sandboxId: vm.id, from, to }));
    vm.channel.onMessage((message, guestMs) => this.fromGuest(message, guestMs));
    void vm.exited.then((exit) => this.onVmExit(exit));
  }

  get id(): string {
    return this.vm.id;
  }

  get state(): SandboxState {
    return this.lifecycle.state;
  }

  on<K extends keyof SandboxEvents>(event: K, listener: SandboxEvents[K]): () => void {
    this.listeners[event].add(listener);
    return () => this.listeners[event].delete(listener);
  }

  private emit<K extends keyof SandboxEvents>(event: K, ...args: Parameters<SandboxEvents[K]>): void {
    for (const listener of this.listeners[event]) (listener as (...a: Parameters<SandboxEvents[K]>) => void)(...args);
  }

  /** Sends a client's message to the server in the guest. Requests get the manifest's deadline. */
  send(message: JsonRpcMessage): void {
    if (this.state === "destroyed") throw new SandboxError("GUEST_EXITED", `sandbox ${this.id} is gone`);
    const id = message.id as RequestId | undefined;
    if (id !== undefined && typeof message.method === "string") {
      const timer = setTimeout(() => this.onTimeout(id, message.method as string), this.callTimeoutMs);
      this.inFlight.set(id, timer);
      if (this.state === "idle") this.lifecycle.transition("active");
    }
    this.vm.channel.send(message);
  }

  private fromGuest(message: JsonRpcMessage, guestMs?: number): void {
    const id = message.id as RequestId | undefined;
    if (id !== undefined && !("method" in message)) {
      const timer = this.inFlight.get(id);
      if (!timer) return; // a late answer to a request already failed (or one the host made itself)
      clearTimeout(timer);
      this.inFlight.delete(id);
      if (this.inFlight.size === 0 && this.state === "active") this.lifecycle.transition("idle");
    }
    this.emit("message", message, guestMs);
  }

  /** A request past its deadline fails, and the clone is replaced: its state can no longer be trusted. */
  private onTimeout(id: RequestId, method: string): void {
    this.inFlight.delete(id);
    const error = new SandboxError(
      "CALL_TIMEOUT",
      `${method} took longer than ${this.callTimeoutMs} ms in server '${this.server}'; the sandbox was reset`,
    );
    this.emit("requestFailed", id, error);
    void this.destroy(error.message, error);
  }

  private onVmExit(exit: VmExit): void {
    if (this.closing) return;
    const detail = exit.serverExit
      ? `the server exited (code ${exit.serverExit.code ?? exit.serverExit.signal}): ${exit.serverExit.stderrTail.trim().split("\n").pop() ?? ""}`
      : exit.reason;
    void this.destroy(detail, new SandboxError("GUEST_EXITED", `sandbox for '${this.server}' died: ${detail}`));
  }

  /** Ends the clone. Every request still in flight fails with `error` (or a generic reason). Idempotent. */
  async destroy(reason: string, error?: SandboxError): Promise<void> {
    if (this.closing) return this.vm.exited.then(() => undefined);
    this.closing = true;
    const failure = error ?? new SandboxError("GUEST_EXITED", `sandbox for '${this.server}' was closed: ${reason}`);
    for (const [id, timer] of this.inFlight) {
      clearTimeout(timer);
      this.emit("requestFailed", id, failure);
    }
    this.inFlight.clear();
    this.lifecycle.transition("destroyed");
    // Owners learn at once, so a next request never lands on a sandbox that is on its way out.
    this.emit("closed", error);
    await this.vm.kill(reason);
  }
}
