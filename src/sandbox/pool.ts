import type { TenantHolds } from "../tenancy/tenant-counter.js";
import type { Logger } from "pino";
import type { ServerManifest } from "../config/manifest.js";
import type { SandboxUnit } from "../config/sandbox-unit.js";
import type { SandboxDriver, VmSpec } from "./driver.js";
import { PoolClosedError, UnknownServerError } from "./errors.js";
import { SandboxAdmission, type LeaseOwner } from "./admission.js";
import { PoolLease, SandboxHold, type AffinityKey, type LeaseEvents, type LeaseOptions, type SandboxLease } from "./lease.js";
import { ServerPool, type ServerPoolStats } from "./server-pool.js";
import { SuspendStore, type SavedRef } from "./suspend-store.js";
import type { GuestPreparation, TemplateMeta, TemplateStore } from "./template.js";
import type { Sandbox } from "./sandbox.js";
import type { VmBudgetLimits } from "./vm-budget.js";
import { SlotGate } from "./slot-gate.js";

export type { ServerPoolStats } from "./server-pool.js";

export interface SandboxPoolOptions {
  driver: SandboxDriver;
  templates: TemplateStore;
  preparation: GuestPreparation;
  log: Logger;
  /** Where suspended sandboxes are saved. */
  suspendDir: string;
  limits?: VmBudgetLimits;
  /** Guests running a request at once (the run gate); 0 or unset: no limit. */
  runSlots?: number;
  /** A request running longer than this in its guest gives its run slot to the next in line. */
  runSliceMs?: number;
  /** A warm pool grown by demand shrinks by one clone after this long without a miss (default 60 s). */
  warmShrinkAfterMs?: number;
  /** Tenants' running sandboxes counted beyond this process (a cluster), besides this pool's own count. */
  tenantSandboxes?: TenantHolds;
}

/**
 * Every sandbox unit's pool, and the router's only way to a sandbox: it hands out leases keyed by an
 * affinity key, and decides in one place (SandboxAdmission) whether another VM may run. The router asks
 * by server; servers sharing a sandbox get leases on one clone per session (a SandboxHold).
 */
export class SandboxPool {
  /** Each unit's pool, by unit name. */
  private readonly units = new Map<string, ServerPool>();
  /** The same pools, by the name of each server in them. */
  private readonly servers = new Map<string, ServerPool>();
  /** Session holds, by unit and session: a unit's second server in a session joins the first's clone. */
  private readonly holds = new Map<string, SandboxHold>();
  private readonly admission: SandboxAdmission;
  private readonly saved: SuspendStore;
  private readonly runGate: SlotGate;
  private readonly suspendGate: SlotGate;
  private closed = false;

  constructor(private readonly options: SandboxPoolOptions) {
    this.saved = new SuspendStore(options.suspendDir);
    this.runGate = new SlotGate(options.runSlots ?? 0, options.runSliceMs ?? 50);
    // As many saves at once as there are run slots (one when the run gate is off).
    this.suspendGate = new SlotGate(Math.max(options.runSlots ?? 0, 1));
    this.admission = new SandboxAdmission(
      options.limits ?? { maxVms: 64, maxQueue: 64, queueTimeoutMs: 10_000 },
      () => [...this.units.values()].some((s) => s.dropIdle()),
      options.tenantSandboxes,
    );
  }

  /** VMs running now against the global cap, and acquisitions waiting for one. */
  budgetStats(): { inUse: number; queued: number } {
    return this.admission.budgetStats();
  }

  /** Guests running a request in a slot of their own, and sandboxes whose request waits for one. */
  runGateStats(): { running: number; waiting: number } {
    return this.runGate.stats();
  }

  /** Running sandboxes `tenant` holds now. */
  runningSandboxes(tenant: string): number {
    return this.admission.running(tenant);
  }

  /**
   * Starts building (or loading) the unit's template and filling its pool, in the background, as soon
   * as its guest spec (image paths, accelerator) is known.
   */
  add(unit: SandboxUnit, spec: Promise<VmSpec>, progress: (line: string) => void = () => undefined): void {
    if (this.closed) throw new PoolClosedError("The pool is closed");
    const { driver, templates, preparation, log } = this.options;
    const pool = new ServerPool(unit, spec, { driver, templates, preparation, admission: this.admission, saved: this.saved, runGate: this.runGate, suspendGate: this.suspendGate, warmShrinkAfterMs: this.options.warmShrinkAfterMs ?? 60_000, log }, progress);
    this.units.set(unit.name, pool);
    for (const member of unit.members) this.servers.set(member.name, pool);
  }

  has(server: string): boolean {
    return this.servers.has(server);
  }

  serverNames(): string[] {
    return [...this.servers.keys()];
  }

  manifest(server: string): ServerManifest | undefined {
    return this.servers.get(server)?.unit.members.find((m) => m.name === server);
  }

  /** Resolves once the server's template exists (built, or loaded and verified). */
  async template(server: string): Promise<TemplateMeta> {
    return (await this.get(server).whenTemplateReady()).meta;
  }

  /**
   * A lease for `key`: no VM yet; one is acquired on the lease's first `ready`. In a shared sandbox, a
   * session's leases on its servers share one hold, so they act on one clone.
   */
  lease(key: AffinityKey, owner: LeaseOwner, events: LeaseEvents, options?: LeaseOptions): SandboxLease {
    const pool = this.get(key.server);
    const holdKey = key.scope === "session" ? sessionHoldKey(pool, key.session) : undefined;
    let hold = holdKey === undefined ? undefined : this.holds.get(holdKey);
    if (!hold || hold.has(key.server)) hold = this.newHold(pool, owner, holdKey);
    return new PoolLease(key, hold, events, options);
  }

  private newHold(pool: ServerPool, owner: LeaseOwner, holdKey: string | undefined, adopted?: Sandbox): SandboxHold {
    const hold: SandboxHold = new SandboxHold(owner, () => pool.acquire(), this.admission, () => {
      if (holdKey !== undefined && this.holds.get(holdKey) === hold) this.holds.delete(holdKey);
    }, adopted);
    if (holdKey !== undefined) this.holds.set(holdKey, hold);
    return hold;
  }

  /**
   * A lease on a sandbox saved before (a gateway restart): undefined when it cannot come back (its
   * template was rebuilt, its state is gone). It resumes on first use. The servers of a shared sandbox
   * each adopt the same saved sandbox; the first brings it back, the others join it.
   */
  async adopt(key: AffinityKey, owner: LeaseOwner, ref: SavedRef, events: LeaseEvents, options?: LeaseOptions): Promise<SandboxLease | undefined> {
    const pool = this.units.get(ref.server);
    if (!pool || key.scope !== "session" || this.servers.get(key.server) !== pool) return undefined;
    const holdKey = sessionHoldKey(pool, key.session);
    const joined = this.holds.get(holdKey);
    if (joined && !joined.has(key.server) && joined.current?.id === ref.sandboxId) return new PoolLease(key, joined, events, options, joined.current);
    const sandbox = await pool.adopt(ref.sandboxId, ref.templateKey);
    if (!sandbox) return undefined;
    return new PoolLease(key, this.newHold(pool, owner, holdKey, sandbox), events, options, sandbox);
  }

  /** Deletes what a suspended sandbox saved, for a holder that will never come back. */
  async discardSaved(ref: SavedRef): Promise<void> {
    await this.saved.discard(ref.server, ref.sandboxId);
  }

  stats(): ServerPoolStats[] {
    return [...this.units.values()].map((s) => s.stats());
  }

  private get(server: string): ServerPool {
    const pool = this.servers.get(server);
    if (!pool) throw new UnknownServerError(server);
    return pool;
  }

  /** Ends every sandbox, pooled and leased, and fails acquisitions waiting for a VM. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    this.admission.close();
    await Promise.allSettled([...this.units.values()].map((s) => s.close()));
  }
}

/** One session's hold in one unit: what a unit's servers, leased by the same session, share. */
function sessionHoldKey(pool: ServerPool, session: string): string {
  return `${pool.unit.name}\0${session}`;
}
