import { requestKey, type JsonRpcMessage } from "../../sandbox/agent/protocol.js";
import type { PendingVm, Vm, VmExit } from "./driver.js";
import { CallTimeoutError, GuestExitedError, IllegalTransitionError, ResumeError, SandboxClosedError, type SandboxError } from "./errors.js";
import { checkTransition, type SandboxState } from "./lifecycle.js";
import { events, publishSoon } from "../telemetry/events.js";
import type { SlotGate } from "./slot-gate.js";

type RequestId = string | number;

/**
 * How long an idle sandbox's suspend (onIdle), and a template's snapshot, wait for the server's egress
 * connections to close: a resume resets what was open, and some servers die of that.
 */
export const EGRESS_CLOSE_WAIT_MS = 30_000;

/**
 * A held sandbox idle this long has its vCPUs stopped (when its manifest allows): long enough that a
 * session's calls in quick succession do not each pay a stop and a start, short next to an agent's
 * thinking time between calls.
 */
export const FREEZE_AFTER_MS = 100;

/** The sandbox's state with what belongs to it: only a running sandbox has a VM, only a saved one a file. */

export type SandboxStatus =
  | { state: "pooled"; pending: PendingVm }
  | { state: "resuming"; from: "pooled" | "suspended" }
  | { state: "idle"; vm: Vm }
  | { state: "active"; vm: Vm }
  | { state: "suspending"; vm: Vm }
  | { state: "suspended" }
  | { state: "destroyed"; error: SandboxError | undefined };

export interface SandboxEvents {
  /** A message from a server in the guest: a response, a notification, or a server->client request. */
  message: (server: string, message: JsonRpcMessage, guestMs?: number) => void;
  /** A request to `server` that will never get a real answer (timeout, the guest died); the caller must be told. */
  requestFailed: (server: string, id: RequestId, error: SandboxError) => void;
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

/** What the pool does for a sandbox: loading state into a VMM of its choosing, and saving it to disk. */
export interface SandboxHost {
  /** Loads the template into `pending`, or, without it, the sandbox's saved state into a VMM the pool picks. */
  resume(sandbox: Sandbox, pending: PendingVm | undefined): Promise<Vm>;
  /** Saves a running sandbox to disk and ends its VM; on failure the VM keeps running. */
  suspend(sandbox: Sandbox, vm: Vm): Promise<void>;
  /** The sandbox is gone for good: its saved state, if any, can go too. */
  discard(sandbox: Sandbox): void;
}

export interface SandboxOptions {
  /** Each server's deadline for one request (its manifest's timeouts.callMs). */
  callTimeoutMs: (server: string) => number;
  /** Idle this long, the sandbox is suspended to disk; 0 never. */
  idleSuspendMs: number;
  /** Stop its vCPUs when idle (FREEZE_AFTER_MS), so it costs no CPU until the next request. */
  freezeWhenIdle: boolean;
  /** Shared by every sandbox of the gateway: how many guests run a request at once. */
  runGate?: SlotGate;
  /** Shared by every sandbox of the gateway: how many are saved to disk at once. */
  suspendGate?: SlotGate;
}

/**
 * One clone of a sandbox unit's template (one server's, or a shared sandbox's), from the moment its VMM is
 * prestarted (`pooled`) to its end. It tracks the requests in flight, by server and id, so that none is
 * left hanging: each has a deadline, and if the guest dies every one fails with a reason. Idle long enough, it is suspended (its VM ends, its state is on disk)
 * and resumed on the next request. Every state change goes through `moveTo`, checked against the table
 * in lifecycle.ts.
 */
export class Sandbox {
  readonly id: string;
  private status: SandboxStatus;
  /** Requests in flight, keyed by server and id: the servers of one guest count ids independently. */
  private readonly inFlight = new Map<string, { server: string; id: RequestId; timer: NodeJS.Timeout }>();
  private readonly listeners: { [K in keyof SandboxEvents]: Set<SandboxEvents[K]> } = {
    message: new Set(),
    requestFailed: new Set(),
    closed: new Set(),
    suspended: new Set(),
    resumed: new Set(),
  };
  /** Set when the gateway lets go of the sandbox without ending what it saved (see `release`). */
  private keepSavedState = false;
  private idleTimer: NodeJS.Timeout | undefined;
  private freezeTimer: NodeJS.Timeout | undefined;
  /** When the sandbox last had a request (epoch ms): least recently used ones are suspended first. */
  lastUsed = Date.now();
  /** Counts uses: "used meanwhile?" is asked of it, since two uses can fall in the same millisecond. */
  private uses = 0;
  /** How it came to its holder; set by the pool when it hands the sandbox out. */
  timings: SandboxTimings = { source: "prestarted", resumeMs: 0 };
  /** Given while it holds one of the run gate's slots: gives it back. */
  private leaveRunSlot: (() => void) | undefined;
  /** Messages written while its first request waits for a run slot, in order. */
  private awaitingRunSlot: Array<{ server: string; message: JsonRpcMessage }> | undefined;
  /** A suspend or resume under way; requests wait for it. */
  private transition: Promise<void> | undefined;
  /** Handed to a holder (not waiting in a pool): only then does idleness lead to a suspend. */
  private held = false;

  private constructor(
    /** The sandbox unit's name: a server's, or a shared sandbox's (every metric and log names it). */
    readonly server: string,
    id: string,
    /** The template it was cloned from: its saved state loads on that one only. */
    readonly templateKey: string,
    initial: SandboxStatus,
    private readonly options: SandboxOptions,
    private readonly host: SandboxHost,
  ) {
    this.id = id;
    this.status = initial;
  }

  /** A sandbox on a VMM started ahead of demand, waiting for the template: `resume()` brings it up. */
  static pooled(server: string, pending: PendingVm, templateKey: string, options: SandboxOptions, host: SandboxHost): Sandbox {
    const sandbox = new Sandbox(server, pending.id, templateKey, { state: "pooled", pending }, options, host);
    void pending.exited.then(() => {
      if (sandbox.status.state === "pooled") void sandbox.destroy("its VMM exited while pooled");
    });
    return sandbox;
  }

  /** A sandbox known only by its id and saved on disk (from before a gateway restart): it resumes on first use. */
  static suspended(server: string, id: string, templateKey: string, options: SandboxOptions, host: SandboxHost): Sandbox {
    const sandbox = new Sandbox(server, id, templateKey, { state: "suspended" }, options, host);
    sandbox.held = true;
    return sandbox;
  }

  /** The pool hands the sandbox to a holder: from now on it is suspended when idle long enough. */
  hold(timings: SandboxTimings): void {
    this.held = true;
    this.timings = timings;
    this.markUsed();
    this.armIdleTimer();
  }

  /**
   * `pooled -> destroyed` without ending the VMM: a sandbox resuming from disk takes the VMM over (the
   * pool keeps its VMMs as pooled sandboxes). The VMM's budget slot goes with the process, not with this.
   */
  handOver(): PendingVm {
    const status = this.status;
    if (status.state !== "pooled") throw new IllegalTransitionError(`sandbox ${this.id} is ${status.state}: only a pooled sandbox hands its VMM over`);
    this.moveTo({ state: "destroyed", error: undefined });
    this.emit("closed", undefined, false);
    return status.pending;
  }

  get state(): SandboxState {
    return this.status.state;
  }

  /** Whether its manifest lets it be suspended when idle (a server may need to keep running). */
  get suspendable(): boolean {
    return this.options.idleSuspendMs > 0;
  }

  /** The running VM; undefined unless idle, active or suspending. */
  get vm(): Vm | undefined {
    return "vm" in this.status ? this.status.vm : undefined;
  }

  /** Its vCPUs are stopped while it is idle (see FREEZE_AFTER_MS). */
  get frozen(): boolean {
    return this.vm?.frozen ?? false;
  }

  /** The VMM process while there is one (pooled or running), for stats. */
  get pid(): number | undefined {
    return this.status.state === "pooled" ? this.status.pending.pid : this.vm?.pid;
  }

  on<K extends keyof SandboxEvents>(event: K, listener: SandboxEvents[K]): () => void {
    this.listeners[event].add(listener);
    return () => this.listeners[event].delete(listener);
  }

  private emit<K extends keyof SandboxEvents>(event: K, ...args: Parameters<SandboxEvents[K]>): void {
    for (const listener of this.listeners[event]) (listener as (...a: Parameters<SandboxEvents[K]>) => void)(...args);
  }

  private moveTo(next: SandboxStatus): void {
    const from = this.status.state;
    checkTransition(`sandbox ${this.id}`, from, next.state);
    this.status = next;
    publishSoon(events.sandboxTransition, { server: this.server, sandboxId: this.id, from, to: next.state });
    if (next.state === "idle") {
      this.armIdleTimer();
      this.armFreezeTimer();
    }
  }

  private attach(vm: Vm): void {
    vm.channel.onMessage((server, message, guestMs) => {
      if (this.vm === vm) this.fromGuest(server, message, guestMs);
    });
    void vm.exited.then((exit) => {
      if (this.vm === vm) this.onVmExit(exit);
    });
  }

  /**
   * `pooled -> resuming -> idle`: loads the template into the prestarted VMM. On failure the sandbox is
   * destroyed (its VMM with it) and the error thrown.
   */
  async resume(): Promise<void> {
    if (this.status.state !== "pooled") throw new ResumeError(`sandbox ${this.id} is ${this.status.state}, not pooled`);
    const { pending } = this.status;
    await this.load(pending, "pooled");
  }

  /** Resolves once the sandbox runs: waits for a suspend or resume under way, resumes a suspended one. */
  async ensureRunning(): Promise<void> {
    while (this.transition) await this.transition.catch(() => undefined);
    if (this.status.state === "suspended") {
      this.transition = this.load(undefined, "suspended").finally(() => {
        this.transition = undefined;
      });
      await this.transition;
    }
    if (this.status.state === "destroyed") {
      throw this.status.error ?? new SandboxClosedError(`The sandbox of server '${this.server}' was closed`);
    }
  }

  private async load(pending: PendingVm | undefined, from: "pooled" | "suspended"): Promise<void> {
    this.moveTo({ state: "resuming", from });
    let vm: Vm;
    try {
      vm = await this.host.resume(this, pending);
    } catch (err) {
      const error = err instanceof ResumeError ? err : new ResumeError(`resume failed: ${(err as Error).message}`, { cause: err });
      await this.destroy(error.message, error);
      throw error;
    }
    if (this.status.state === "destroyed") {
      // Destroyed while it resumed (its session ended, the gateway stops): nothing else knows this VM.
      await vm.kill("sandbox destroyed while it resumed");
      throw new SandboxClosedError(`The sandbox of server '${this.server}' was closed while it resumed`);
    }
    this.moveTo({ state: "idle", vm });
    this.attach(vm);
    if (from === "suspended") this.emit("resumed");
  }

  /**
   * Suspends the sandbox once it has been idle for `idleSuspendMs`. One timer, pushed back each time the
   * sandbox turns idle, so a call costs no new timer; going busy leaves it running, since `suspend` does
   * nothing to a sandbox that is not idle when it fires.
   */
  private armIdleTimer(): void {
    if (!this.options.idleSuspendMs || !this.held || this.status.state !== "idle") return;
    if (this.idleTimer) this.idleTimer.refresh();
    else this.idleTimer = setTimeout(() => this.onIdle(this.uses, Date.now()), this.options.idleSuspendMs).unref();
  }

  private markUsed(): void {
    this.lastUsed = Date.now();
    this.uses++;
  }

  /** Freezes the sandbox FREEZE_AFTER_MS after it was last used, if it is idle then (held ones only). */
  private armFreezeTimer(delayMs = FREEZE_AFTER_MS - (Date.now() - this.lastUsed)): void {
    if (!this.options.freezeWhenIdle || !this.held || this.status.state !== "idle") return;
    clearTimeout(this.freezeTimer);
    this.freezeTimer = setTimeout(() => void this.freezeWhenQuiet(), Math.max(delayMs, 0)).unref();
  }

  /** Freezes a held sandbox unless it was used again meanwhile, or its guest has work of its own to go on with. */
  private async freezeWhenQuiet(): Promise<void> {
    if (Date.now() - this.lastUsed < FREEZE_AFTER_MS) return this.armFreezeTimer();
    if (this.holdsConnections() || (await this.runsBackgroundJobs())) return this.armFreezeTimer(1_000);
    if (Date.now() - this.lastUsed < FREEZE_AFTER_MS) return this.armFreezeTimer(); // used while we asked
    await this.freeze();
  }

  /** Processes its servers started that still run (exec's `start`): frozen, they would stand still. */
  private async runsBackgroundJobs(): Promise<boolean> {
    const vm = this.vm;
    if (!vm || this.status.state !== "idle") return false;
    return (await vm.childProcesses(2_000).catch(() => 0)) > 0;
  }

  /**
   * Egress connections open. Such a guest is not frozen: frozen, its timers stand still, so a pool would
   * never close its idle connections, and the suspend that waits for them (onIdle) would reset them.
   */
  private holdsConnections(): boolean {
    return (this.vm?.egress?.openConnections() ?? 0) > 0;
  }

  /** Stops the vCPUs of an idle sandbox (a warm clone waiting in its pool, or a held one idle long enough). */
  async freeze(): Promise<void> {
    const status = this.status;
    if (!this.options.freezeWhenIdle || status.state !== "idle" || this.holdsConnections()) return;
    await status.vm.freeze().catch(() => undefined); // a VM that cannot be stopped just keeps running
  }

  /** Makes a running sandbox's vCPUs run (a frozen one is thawed, its clock set) before a message goes to it. */
  async wake(): Promise<void> {
    this.markUsed();
    await this.vm?.thaw();
  }

  /**
   * Idle long enough. A sandbox with egress connections open waits for them to close first (a database
   * pool closes idle ones after a few seconds), up to EGRESS_CLOSE_WAIT_MS. A use meanwhile ends the
   * wait: the refreshed idle timer takes over.
   */
  private onIdle(use: number, since: number): void {
    if (this.uses !== use) return;
    const status = this.status;
    if (status.state === "idle" && this.holdsConnections() && Date.now() - since < EGRESS_CLOSE_WAIT_MS) {
      setTimeout(() => this.onIdle(use, since), 1_000).unref();
      return;
    }
    void this.suspend();
  }

  /**
   * Saves the sandbox to disk and ends its VM; it comes back on the next request. Only an idle sandbox
   * is suspended; anything else returns at once. A failed suspend leaves it running (it is logged and
   * published by the host); a destroy that lands meanwhile wins and the saved state is discarded.
   */
  async suspend(): Promise<void> {
    if (this.status.state !== "idle" || this.transition) return;
    const used = this.uses;
    const leave = await this.options.suspendGate?.turn();
    try {
      // Used while it waited for its turn: not idle long enough any more (its idle timer runs again).
      if (this.uses === used) await this.suspendNow();
    } finally {
      leave?.();
    }
  }

  private async suspendNow(): Promise<void> {
    if (this.status.state !== "idle" || this.transition) return;
    const { vm } = this.status;
    this.exitWhileSuspending = undefined; // an earlier suspend's VM exit says nothing about this one
    this.moveTo({ state: "suspending", vm });
    this.transition = this.host
      .suspend(this, vm)
      .then(
        () => {
          if (this.status.state === "destroyed") {
            if (!this.keepSavedState) this.host.discard(this);
            return;
          }
          this.moveTo({ state: "suspended" });
          this.emit("suspended");
        },
        () => {
          if (this.status.state !== "suspending") return;
          // A failed suspend leaves the sandbox running, unless its VM died under it (QEMU killed
          // mid-save): then it is lost, as a death while idle is, rather than idle with no VM to answer.
          const exit = this.exitWhileSuspending;
          this.exitWhileSuspending = undefined;
          this.moveTo({ state: "idle", vm });
          if (exit) this.died(exit);
        },
      )
      .finally(() => {
        this.transition = undefined;
      });
    await this.transition;
  }

  /** Sends a client's message to `server` in the guest. Requests get its manifest's deadline. */
  send(server: string, message: JsonRpcMessage): void {
    const status = this.status;
    if (status.state !== "idle" && status.state !== "active") {
      throw new SandboxClosedError(`The sandbox of server '${this.server}' is not running (${status.state})`);
    }
    const id = message.id as RequestId | undefined;
    this.markUsed();
    const isRequest = id !== undefined && typeof message.method === "string";
    if (isRequest) {
      const method = message.method as string;
      const key = requestKey(server, id);
      this.inFlight.set(key, { server, id, timer: setTimeout(() => this.onTimeout(key, method), this.options.callTimeoutMs(server)) });
      if (status.state === "idle") this.moveTo({ state: "active", vm: status.vm });
      const traceparent = (message.params as { _meta?: { traceparent?: unknown } } | undefined)?._meta?.traceparent;
      if (typeof traceparent === "string") status.vm.egress?.noteCall(traceparent);
    }
    this.write(status.vm, server, message, isRequest);
  }

  /**
   * Writes to the guest, in order. A request to a sandbox that holds no run slot waits for one (the run gate),
   * and every message after it waits behind it, so nothing overtakes what the client sent first.
   */
  private write(vm: Vm, server: string, message: JsonRpcMessage, isRequest: boolean): void {
    if (this.awaitingRunSlot) return void this.awaitingRunSlot.push({ server, message });
    if (this.leaveRunSlot || !isRequest || !this.options.runGate) return vm.channel.send(server, message);
    this.awaitingRunSlot = [{ server, message }];
    this.options.runGate.enter((leave) => {
      const queued = this.awaitingRunSlot ?? [];
      this.awaitingRunSlot = undefined;
      const status = this.status;
      // Ended while it waited: its requests have failed already.
      if (status.state !== "active" && status.state !== "idle") return leave();
      this.leaveRunSlot = leave;
      try {
        for (const q of queued) status.vm.channel.send(q.server, q.message);
      } catch {
        // The guest went away while the requests waited: its exit fails every request in flight
        // (onVmExit), as it would have had they been written.
      }
    });
  }

  /** No request in flight any more (or the sandbox ends): its run slot goes to the next in line. */
  private giveUpRunSlot(): void {
    this.leaveRunSlot?.();
    this.leaveRunSlot = undefined;
  }

  private fromGuest(server: string, message: JsonRpcMessage, guestMs?: number): void {
    const id = message.id as RequestId | undefined;
    if (id !== undefined && !("method" in message)) {
      const key = requestKey(server, id);
      const request = this.inFlight.get(key);
      if (!request) return; // a late answer to a request already failed (or one the host made itself)
      clearTimeout(request.timer);
      this.inFlight.delete(key);
      const status = this.status;
      if (this.inFlight.size === 0 && status.state === "active") this.moveTo({ state: "idle", vm: status.vm });
      if (this.inFlight.size === 0) this.giveUpRunSlot();
    }
    this.emit("message", server, message, guestMs);
  }

  /** A request past its deadline fails, and the clone is replaced: its state can no longer be trusted. */
  private onTimeout(key: string, method: string): void {
    const request = this.inFlight.get(key);
    if (!request) return;
    this.inFlight.delete(key);
    const { server, id } = request;
    const error = new CallTimeoutError(
      `${method} took longer than ${this.options.callTimeoutMs(server)} ms (the manifest's timeouts.callMs) in server '${server}'; the sandbox was reset`,
    );
    this.emit("requestFailed", server, id, error);
    void this.destroy(error.message, error);
  }

  private onVmExit(exit: VmExit): void {
    // A suspend ends the VM itself; should that suspend fail, the exit was a death (see suspendNow).
    if (this.status.state === "suspending") return void (this.exitWhileSuspending = exit);
    this.died(exit);
  }

  /** The VM exited when nothing here ended it: what the sandbox held is gone. */
  private died(exit: VmExit): void {
    const detail = exitDetail(exit);
    events.sandboxCrash.publish({ server: this.server, sandboxId: this.id, detail });
    void this.destroy(detail, new GuestExitedError(`the guest died: ${detail}`));
  }

  /** How the VM exited while it was being suspended, in case the suspend then fails. */
  private exitWhileSuspending: VmExit | undefined;

  /** The destroy under way or done: resolves once the sandbox's VMM process is gone. */
  private ended: Promise<void> | undefined;

  /**
   * Ends the sandbox. Every request still in flight fails with `error` (or a generic reason). Idempotent:
   * every call resolves once the VMM process is gone.
   */
  destroy(reason: string, error?: SandboxError): Promise<void> {
    this.ended ??= this.end(reason, error);
    return this.ended;
  }

  private async end(reason: string, error?: SandboxError): Promise<void> {
    const before = this.status;
    if (before.state === "destroyed") return;
    const whileIdle = error !== undefined && before.state === "idle";
    clearTimeout(this.idleTimer);
    clearTimeout(this.freezeTimer);
    this.moveTo({ state: "destroyed", error });
    this.giveUpRunSlot();
    const failure = error ?? new SandboxClosedError(`The sandbox of server '${this.server}' was closed (${reason})`);
    for (const { server, id, timer } of this.inFlight.values()) {
      clearTimeout(timer);
      this.emit("requestFailed", server, id, failure);
    }
    this.inFlight.clear();
    // Owners learn at once, so a next request never lands on a sandbox that is on its way out.
    this.emit("closed", error, whileIdle);
    if (!this.keepSavedState) this.host.discard(this);
    if (before.state === "pooled") await before.pending.kill(reason);
    else if ("vm" in before) await before.vm.kill(reason);
  }

  /**
   * Lets go of the sandbox without losing what it saved: a suspended one stays on disk for its holder to
   * come back to (after a gateway restart); a running one ends (its memory cannot be kept).
   */
  async release(reason: string): Promise<void> {
    this.keepSavedState = this.status.state === "suspended";
    await this.destroy(reason);
  }
}

/** Why a VM ended, in one line: the hosted server's own error when it was the server that died. */
export function exitDetail(exit: VmExit): string {
  const server = exit.serverExit;
  if (!server) return exit.reason;
  return `${server.server ? `server '${server.server}'` : "the server"} exited (code ${server.code ?? server.signal}): ${crashLine(server.stderrTail)}`;
}

/**
 * The line of a dead server's stderr that says why. Node ends a crash with the error's properties, its
 * stack and its version, none of which does; the first `SomeError: message` line does (Python's
 * traceback ends with it). Else the last line.
 */
export function crashLine(stderrTail: string): string {
  const lines = stderrTail.split("\n").map((l) => l.trim()).filter((l) => l && !/^at /.test(l) && !/^Node\.js v\d/.test(l));
  return lines.find((l) => /\b\w*(Error|Exception)\b: /.test(l)) ?? lines.at(-1) ?? "";
}
