import type { JsonRpcMessage } from "../../sandbox/agent/protocol.js";
import type { LeaseOwner, SandboxAdmission } from "./admission.js";
import { SandboxClosedError, SandboxLostError, type SandboxError } from "./errors.js";
import { resultOf } from "./guest-rpc.js";
import type { Sandbox, SandboxTimings } from "./sandbox.js";
import type { SavedRef } from "./suspend-store.js";
import { nowMs } from "../telemetry/events.js";

type RequestId = string | number;

/**
 * What a lease is bound to. Today: one client session's use of one server (`session`), or one request
 * answered in a clone of its own (`call`). Later protocol eras add other scopes (a principal, a signed
 * handle), and a shared directory will store leases by it: this is the one type they extend.
 */
export type AffinityKey =
  | { scope: "session"; server: string; session: string }
  | { scope: "call"; server: string; call: string };

/** How a sandbox was made ready for a message, when it had to be: timed for the request's trace. */
export interface Acquisition {
  start: number;
  end: number;
  source: SandboxTimings["source"] | "suspended";
}

export interface LeaseEvents {
  /** A message from the server in the sandbox (replies to the lease's own requests are not among them). */
  message(message: JsonRpcMessage, guestMs?: number): void;
  /** A request sent through the lease that will never be answered (timeout, the VM died, the sandbox ended). */
  requestFailed(id: RequestId, error: SandboxError): void;
  /** The sandbox was saved to disk or came back from it: `savedRef` changed. */
  savedStateChanged(): void;
}

export interface LeaseOptions {
  /** Runs on every new sandbox before anything else is sent to it (e.g. replaying a logging level). */
  onFreshSandbox?: () => Promise<void>;
}

/**
 * All the router knows of a sandbox: a stable handle, keyed by an affinity key, on whichever sandbox
 * serves that key now. It acquires one on first need, resumes it when suspended, and gets a fresh one
 * after a failure; what those steps involve (VM budget, tenant quota, saved files) stays behind it.
 */
export interface SandboxLease {
  readonly key: AffinityKey;
  /** A sandbox runs for this lease now (messages that mean nothing to a fresh clone may go). */
  readonly running: boolean;
  /** Where its state is saved while it is suspended (what a restarted gateway needs to find it). */
  readonly savedRef: SavedRef | undefined;
  /**
   * Makes a sandbox ready: acquires or resumes one if needed, and says how (undefined if it ran
   * already). Throws SandboxLostError once after the lease's sandbox died while idle.
   */
  ready(options?: { reportLoss: boolean }): Promise<Acquisition | undefined>;
  /** Sends to the running sandbox; call right after `ready`. */
  send(message: JsonRpcMessage): void;
  /** A request of the gateway's own (its id never reaches a client), on a ready sandbox. */
  request(method: string, params?: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** Saves the sandbox to disk now, if it runs and is idle. */
  suspendIfIdle(): Promise<void>;
  /**
   * Ends the lease. With `keep`, a suspended sandbox stays on disk for a later `adopt`; otherwise the
   * sandbox and what it saved are gone. Idempotent.
   */
  release(options: { keep: boolean }): Promise<void>;
}

/**
 * The sandbox of one affinity key in one sandbox unit, shared by the leases of the unit's servers: in a
 * shared sandbox (a workspace) a session's leases on filesystem, exec and git all act on this one clone.
 * A server alone has one lease per hold. It acquires a sandbox on first need, resumes it when suspended,
 * gets a fresh one after a failure, and lets it go when its last lease does.
 */
export class SandboxHold {
  private sandbox: Sandbox | undefined;
  private acquiring: Promise<Sandbox> | undefined;
  /** The leases on it, by server: messages from the guest go to the lease of the server that sent them. */
  private readonly leases = new Map<string, PoolLease>();

  constructor(
    private readonly owner: LeaseOwner,
    private readonly acquire: () => Promise<Sandbox>,
    private readonly admission: SandboxAdmission,
    /** Called once its last lease left: the pool forgets it. */
    private readonly onEmpty: () => void = () => undefined,
    adopted?: Sandbox,
  ) {
    if (adopted) this.listen(adopted);
  }

  /** A lease of another server joins (a second server of the unit, used by the same session). */
  join(lease: PoolLease): void {
    this.leases.set(lease.key.server, lease);
  }

  /** Whether a lease of `server` holds it now (each server has at most one lease per hold). */
  has(server: string): boolean {
    return this.leases.has(server);
  }

  get current(): Sandbox | undefined {
    return this.sandbox;
  }

  get savedRef(): SavedRef | undefined {
    const sandbox = this.sandbox;
    return sandbox?.state === "suspended" ? { server: sandbox.server, sandboxId: sandbox.id, templateKey: sandbox.templateKey } : undefined;
  }

  async ready(): Promise<Acquisition | undefined> {
    const existing = this.sandbox;
    if (existing && (existing.state === "idle" || existing.state === "active")) {
      await existing.wake();
      return undefined;
    }
    const start = nowMs();
    if (existing && existing.state !== "destroyed") {
      if (existing.state === "suspended") {
        const admitted = await this.admission.admit(this.owner);
        // Throws if it could not be brought back; the next request starts afresh.
        await existing.ensureRunning().finally(() => admitted(existing));
        return { start, end: nowMs(), source: "suspended" };
      }
      await existing.ensureRunning();
      return undefined;
    }
    this.acquiring ??= this.acquireFresh().finally(() => {
      this.acquiring = undefined;
    });
    const sandbox = await this.acquiring;
    await sandbox.wake(); // a warm clone waits in its pool frozen
    return { start, end: nowMs(), source: sandbox.timings.source };
  }

  /** A fresh clone, counted against the owner's tenant for as long as it lives. */
  private async acquireFresh(): Promise<Sandbox> {
    const admitted = await this.admission.admit(this.owner);
    let sandbox: Sandbox;
    try {
      sandbox = await this.acquire();
      admitted(sandbox);
    } finally {
      admitted();
    }
    if (this.leases.size === 0) {
      await sandbox.destroy("its lease was released while it resumed");
      throw new SandboxClosedError(`The lease on '${sandbox.server}' was released while its sandbox resumed`);
    }
    this.listen(sandbox);
    for (const lease of [...this.leases.values()]) lease.savedStateChanged();
    return sandbox;
  }

  async suspendIfIdle(): Promise<void> {
    if (this.sandbox?.state === "idle") await this.sandbox.suspend();
  }

  private listen(sandbox: Sandbox): void {
    this.sandbox = sandbox;
    const each = (f: (lease: PoolLease) => void) => {
      for (const lease of [...this.leases.values()]) f(lease);
    };
    sandbox.on("suspended", () => each((lease) => lease.savedStateChanged()));
    sandbox.on("resumed", () => each((lease) => lease.savedStateChanged()));
    sandbox.on("message", (server, message, guestMs) => this.leases.get(server)?.fromSandbox(message, guestMs));
    sandbox.on("requestFailed", (server, id, error) => this.leases.get(server)?.requestFailed(id, error));
    sandbox.on("closed", (error, whileIdle) => {
      if (this.sandbox !== sandbox) return;
      this.sandbox = undefined;
      if (error && whileIdle) each((lease) => lease.lose(error));
    });
  }

  /**
   * A lease lets go. The last one ends the sandbox: with `keep`, a suspended sandbox stays on disk for a
   * later `adopt`; otherwise the sandbox and what it saved are gone.
   */
  async leave(lease: PoolLease, keep: boolean): Promise<void> {
    if (this.leases.get(lease.key.server) !== lease) return;
    this.leases.delete(lease.key.server);
    if (this.leases.size > 0) return;
    this.onEmpty();
    const sandbox = this.sandbox;
    this.sandbox = undefined;
    if (!sandbox) return;
    await (keep ? sandbox.release("its holder let go") : sandbox.destroy("its lease was released"));
  }
}

/** The pool's lease: one server's view of the sandbox its hold has for one affinity key. */
export class PoolLease implements SandboxLease {
  private released = false;
  /** The sandbox died while idle: the next request is told its state is gone, once. */
  private lost: SandboxError | undefined;
  private readonly internal = new Map<RequestId, (message: JsonRpcMessage) => void>();
  private nextInternalId = 1;
  /** The sandbox this lease's server last got its preamble in, and that replay while it runs. */
  private prepared: Sandbox | undefined;
  private preparing: Promise<void> | undefined;

  constructor(
    readonly key: AffinityKey,
    private readonly hold: SandboxHold,
    private readonly listener: LeaseEvents,
    private readonly options: LeaseOptions = {},
    /** A sandbox adopted from disk already had this server's preamble. */
    adopted?: Sandbox,
  ) {
    this.prepared = adopted;
    hold.join(this);
  }

  get running(): boolean {
    const state = this.hold.current?.state;
    return state !== undefined && state !== "destroyed" && state !== "suspended";
  }

  get savedRef(): SavedRef | undefined {
    return this.hold.savedRef;
  }

  async ready(options: { reportLoss: boolean } = { reportLoss: true }): Promise<Acquisition | undefined> {
    if (this.released) throw new SandboxClosedError(`The lease on server '${this.key.server}' was released: its session ended`);
    if (this.lost && options.reportLoss) {
      const lost = this.lost;
      this.lost = undefined;
      throw new SandboxLostError(lost.message, { cause: lost });
    }
    const acquired = await this.hold.ready();
    // A sandbox new to this server (a fresh clone, or one another server of the unit acquired) first
    // gets what the server must see before anything else.
    const current = this.hold.current;
    if (current && current !== this.prepared) {
      this.prepared = current;
      this.preparing = this.options.onFreshSandbox?.();
    }
    await this.preparing;
    return acquired;
  }

  send(message: JsonRpcMessage): void {
    const sandbox = this.hold.current;
    if (!sandbox) throw new SandboxClosedError(`No sandbox runs for server '${this.key.server}'`);
    sandbox.send(this.key.server, message);
  }

  async request(method: string, params?: Record<string, unknown>): Promise<Record<string, unknown>> {
    // Not `ready`: the preamble's own replay comes through here, and must not wait for itself.
    if (this.released) throw new SandboxClosedError(`The lease on server '${this.key.server}' was released: its session ended`);
    await this.hold.ready();
    const sandbox = this.hold.current!;
    const server = this.key.server;
    const id = `mcpvisor:lease:${this.nextInternalId++}`;
    const reply = new Promise<JsonRpcMessage>((resolve, reject) => {
      this.internal.set(id, resolve);
      const off = sandbox.on("requestFailed", (failedServer, failedId, error) => {
        if (failedServer !== server || failedId !== id) return;
        off();
        reject(error);
      });
    });
    sandbox.send(server, { jsonrpc: "2.0", id, method, ...(params ? { params } : {}) });
    return resultOf(method, await reply.finally(() => this.internal.delete(id)));
  }

  async suspendIfIdle(): Promise<void> {
    await this.hold.suspendIfIdle();
  }

  /** From the hold: a message of this lease's server. */
  fromSandbox(message: JsonRpcMessage, guestMs?: number): void {
    const waiter = message.id !== undefined && !("method" in message) ? this.internal.get(message.id as RequestId) : undefined;
    if (waiter) waiter(message);
    else this.listener.message(message, guestMs);
  }

  requestFailed(id: RequestId, error: SandboxError): void {
    if (!this.internal.has(id)) this.listener.requestFailed(id, error);
  }

  savedStateChanged(): void {
    this.listener.savedStateChanged();
  }

  lose(error: SandboxError): void {
    this.lost = error;
  }

  async release({ keep }: { keep: boolean }): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.hold.leave(this, keep);
  }
}
