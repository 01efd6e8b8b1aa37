import type { JsonRpcMessage } from "../../sandbox/agent/protocol.js";
import type { Vm, VmExit } from "./driver.js";
import { CallTimeoutError, GuestExitedError, ResumeError, SandboxClosedError, SandboxError } from "./errors.js";
import { Lifecycle, type SandboxState } from "./lifecycle.js";
import { events, publishSoon } from "../telemetry/events.js";

type RequestId = string | number;

export interface SandboxEvents {
  /** A message from the server in the guest: a response, a notification, or a server->client request. */
  message: (message: JsonRpcMessage, guestMs?: number) => void;
  /** A request that will never get a real answer (timeout, the guest died); the caller must be told. */
  requestFailed: (id: RequestId, error: SandboxError) => void;
  /**
   * The sandbox is gone; `error` says why when it was not a deliberate destroy. `whileIdle`: it died
   * with no request in flight, so nobody has been told that what it held is lost.
   */
  closed: (error: SandboxError | undefined, whileIdle: boolean) => void;
  /** The sandbox was saved to disk and its VM ended. */
  suspended: () => void;
  /** The sandbox came back from disk: what was saved there is no longer its state. */
  resumed: () => void;
}

export interface SandboxTimings {
  /** How the sandbox was obtained: a clone resumed ahead of demand, or resumed for this caller. */
  source: "warm-pool" | "prestarted" | "cold-vmm";
  resumeMs: number;
}

/** What the pool does for a sandbox: saving it to disk and bringing it back, on a VM of its choosing. */
export interface SandboxHost {
  suspend(sandbox: Sandbox, vm: Vm): Promise<void>;
  resume(sandbox: Sandbox): Promise<Vm>;
  /** The sandbox is gone for good: its saved state, if any, can go too. */
  discard(sandbox: Sandbox): void;
}

export interface SandboxOptions {
  callTimeoutMs: number;
  /** Idle this long, the sandbox is suspended to disk; 0 never. */
  idleSuspendMs: number;
}

/**
 * One clone of a server's template, leased to one client session. It tracks the requests in flight so
 * that none is left hanging: each has a deadline, and if the guest dies every one fails with a reason.
 * Idle long enough, it is suspended (its VM ends, its state is on disk) and resumed on the next request.
 */
export class Sandbox {
  readonly lifecycle: Lifecycle;
  readonly id: string;
  private current: Vm | undefined;
  private readonly inFlight = new Map<RequestId, NodeJS.Timeout>();
  private readonly listeners: { [K in keyof SandboxEvents]: Set<SandboxEvents[K]> } = {
    message: new Set(),
    requestFailed: new Set(),
    closed: new Set(),
    suspended: new Set(),
    resumed: new Set(),
  };
  private closing = false;
  /** Set when the gateway lets go of the sandbox without ending it: its saved state stays on disk. */
  private keepSavedState = false;
  private idleTimer: NodeJS.Timeout | undefined;
  /** When the sandbox last had a request (epoch ms): least recently used ones are suspended first. */
  lastUsed = Date.now();
  /** A suspend or resume under way; requests wait for it. */
  private transition: Promise<void> | undefined;

  /**
   * A sandbox running on `vm`, or, with `vm` a string, one known only by that id and saved on disk
   * (brought back after a gateway restart): it resumes on its first request.
   */
  constructor(
    readonly server: string,
    vm: Vm | string,
    readonly timings: SandboxTimings,
    private readonly options: SandboxOptions,
    private readonly host: SandboxHost,
  ) {
    this.id = typeof vm === "string" ? vm : vm.id;
    this.lifecycle = new Lifecycle(typeof vm === "string" ? "suspended" : "idle");
    this.lifecycle.onTransition(({ from, to }) => {
      publishSoon(events.sandboxTransition, { server, sandboxId: this.id, from, to });
      if (to === "idle") this.armIdleTimer();
    });
    if (typeof vm !== "string") this.attach(vm);
    this.armIdleTimer();
  }

  /** The running VM; undefined while suspended. */
  get vm(): Vm | undefined {
    return this.current;
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

  private attach(vm: Vm): void {
    this.current = vm;
    vm.channel.onMessage((message, guestMs) => {
      if (this.current === vm) this.fromGuest(message, guestMs);
    });
    void vm.exited.then((exit) => {
      if (this.current === vm) this.onVmExit(exit);
    });
  }

  /** Resolves once the sandbox runs: waits for a suspend or resume under way, resumes a suspended one. */
  async ensureRunning(): Promise<void> {
    while (this.transition) await this.transition.catch(() => undefined);
    if (this.state === "suspended") {
      this.transition = this.resumeFromDisk().finally(() => {
        this.transition = undefined;
      });
      await this.transition;
    }
    if (this.state === "destroyed") throw new SandboxClosedError(`sandbox ${this.id} is gone`);
  }

  private async resumeFromDisk(): Promise<void> {
    this.lifecycle.transition("resuming");
    try {
      const vm = await this.host.resume(this);
      if (this.closing) {
        // Destroyed while it resumed (its session ended): nothing else knows this VM, so it ends here.
        await vm.kill("sandbox destroyed while it resumed");
        throw new SandboxClosedError(`sandbox ${this.id} was closed while it resumed`);
      }
      this.attach(vm);
      this.lifecycle.transition("idle");
      this.emit("resumed");
    } catch (err) {
      const error = err instanceof SandboxError ? err : new ResumeError(String(err), { cause: err });
      await this.destroy(`resume from disk failed: ${error.message}`, error);
      throw error;
    }
  }

  /**
   * Suspends the sandbox once it has been idle for `idleSuspendMs`. One timer, pushed back each time the
   * sandbox turns idle, so a call costs no new timer; going busy leaves it running, since `suspend` does
   * nothing to a sandbox that is not idle when it fires.
   */
  private armIdleTimer(): void {
    if (!this.options.idleSuspendMs || this.state !== "idle") return;
    if (this.idleTimer) this.idleTimer.refresh();
    else this.idleTimer = setTimeout(() => void this.suspend(), this.options.idleSuspendMs).unref();
  }

  /** Saves the sandbox to disk and ends its VM; it comes back on the next request. */
  async suspend(): Promise<void> {
    if (this.state !== "idle" || this.transition || !this.current) return;
    const vm = this.current;
    this.lifecycle.transition("suspending");
    this.transition = this.host
      .suspend(this, vm)
      .then(() => {
        this.current = undefined;
        this.lifecycle.transition("suspended");
        this.emit("suspended");
      })
      .catch(() => {
        // The VM still runs (a failed suspend lets it continue): stay as we were.
        if (this.state === "suspending") this.lifecycle.transition("idle");
      })
      .finally(() => {
        this.transition = undefined;
      });
    await this.transition;
  }

  /** Sends a client's message to the server in the guest. Requests get the manifest's deadline. */
  send(message: JsonRpcMessage): void {
    if (!this.current || (this.state !== "idle" && this.state !== "active")) {
      throw new SandboxClosedError(`sandbox ${this.id} is not running (${this.state})`);
    }
    const id = message.id as RequestId | undefined;
    this.lastUsed = Date.now();
    if (id !== undefined && typeof message.method === "string") {
      const timer = setTimeout(() => this.onTimeout(id, message.method as string), this.options.callTimeoutMs);
      this.inFlight.set(id, timer);
      if (this.state === "idle") this.lifecycle.transition("active");
    }
    this.current.channel.send(message);
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
    const error = new CallTimeoutError(
      `${method} took longer than ${this.options.callTimeoutMs} ms (the manifest's timeouts.callMs) in server '${this.server}'; the sandbox was reset`,
    );
    this.emit("requestFailed", id, error);
    void this.destroy(error.message, error);
  }

  private onVmExit(exit: VmExit): void {
    if (this.closing || this.state === "suspending" || this.state === "suspended") return;
    const detail = exit.serverExit
      ? `the server exited (code ${exit.serverExit.code ?? exit.serverExit.signal}): ${exit.serverExit.stderrTail.trim().split("\n").pop() ?? ""}`
      : exit.reason;
    events.sandboxCrash.publish({ server: this.server, sandboxId: this.id, detail });
    void this.destroy(detail, new GuestExitedError(`the guest died: ${detail}`));
  }

  /** Ends the clone. Every request still in flight fails with `error` (or a generic reason). Idempotent. */
  async destroy(reason: string, error?: SandboxError): Promise<void> {
    if (this.closing) {
      await this.current?.exited;
      return;
    }
    this.closing = true;
    const whileIdle = error !== undefined && this.state === "idle";
    clearTimeout(this.idleTimer);
    const failure = error ?? new SandboxClosedError(`The sandbox was closed (${reason})`);
    for (const [id, timer] of this.inFlight) {
      clearTimeout(timer);
      this.emit("requestFailed", id, failure);
    }
    this.inFlight.clear();
    this.lifecycle.transition("destroyed");
    // Owners learn at once, so a next request never lands on a sandbox that is on its way out.
    this.emit("closed", error, whileIdle);
    if (!this.keepSavedState) this.host.discard(this);
    await this.current?.kill(reason);
  }

  /**
   * Lets go of the sandbox without losing what it saved: a suspended one stays on disk for its session to
   * come back to (after a gateway restart); a running one ends (its memory cannot be kept).
   */
  async release(reason: string): Promise<void> {
    this.keepSavedState = this.state === "suspended";
    await this.destroy(reason);
  }
}
