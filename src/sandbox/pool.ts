import type { Logger } from "pino";
import type { ServerManifest } from "../config/manifest.js";
import type { SandboxDriver, VmSpec } from "./driver.js";
import { PoolClosedError, UnknownServerError } from "./errors.js";
import { SandboxAdmission, type LeaseOwner } from "./admission.js";
import { PoolLease, type AffinityKey, type LeaseEvents, type LeaseOptions, type SandboxLease } from "./lease.js";
import { ServerPool, type ServerPoolStats } from "./server-pool.js";
import { SuspendStore, type SavedRef } from "./suspend-store.js";
import type { GuestPreparation, TemplateMeta, TemplateStore } from "./template.js";
import type { VmBudgetLimits } from "./vm-budget.js";

export type { ServerPoolStats } from "./server-pool.js";

export interface SandboxPoolOptions {
  driver: SandboxDriver;
  templates: TemplateStore;
  preparation: GuestPreparation;
  log: Logger;
  /** Where suspended sandboxes are saved. */
  suspendDir: string;
  limits?: VmBudgetLimits;
}

/**
 * Every hosted server's pool, and the router's only way to a sandbox: it hands out leases keyed by an
 * affinity key, and decides in one place (SandboxAdmission) whether another VM may run.
 */
export class SandboxPool {
  private readonly servers = new Map<string, ServerPool>();
  private readonly admission: SandboxAdmission;
  private readonly saved: SuspendStore;
  private closed = false;

  constructor(private readonly options: SandboxPoolOptions) {
    this.saved = new SuspendStore(options.suspendDir);
    this.admission = new SandboxAdmission(options.limits ?? { maxVms: 64, maxQueue: 64, queueTimeoutMs: 10_000 }, () =>
      [...this.servers.values()].some((s) => s.dropIdle()),
    );
  }

  /** VMs running now against the global cap, and acquisitions waiting for one. */
  budgetStats(): { inUse: number; queued: number } {
    return this.admission.budgetStats();
  }

  /** Running sandboxes `tenant` holds now. */
  runningSandboxes(tenant: string): number {
    return this.admission.running(tenant);
  }

  /**
   * Starts building (or loading) the server's template and filling its pool, in the background, as soon
   * as its guest spec (image paths, accelerator) is known.
   */
  add(manifest: ServerManifest, spec: Promise<VmSpec>, progress: (line: string) => void = () => undefined): void {
    if (this.closed) throw new PoolClosedError("The pool is closed");
    const { driver, templates, preparation, log } = this.options;
    this.servers.set(manifest.name, new ServerPool(manifest, spec, { driver, templates, preparation, admission: this.admission, saved: this.saved, log }, progress));
  }

  has(server: string): boolean {
    return this.servers.has(server);
  }

  serverNames(): string[] {
    return [...this.servers.keys()];
  }

  manifest(server: string): ServerManifest | undefined {
    return this.servers.get(server)?.manifest;
  }

  /** Resolves once the server's template exists (built, or loaded and verified). */
  async template(server: string): Promise<TemplateMeta> {
    return (await this.get(server).whenTemplateReady()).meta;
  }

  /** A lease for `key`: no VM yet; one is acquired on the lease's first `ready`. */
  lease(key: AffinityKey, owner: LeaseOwner, events: LeaseEvents, options?: LeaseOptions): SandboxLease {
    const pool = this.get(key.server);
    return new PoolLease(key, owner, () => pool.acquire(), this.admission, events, options);
  }

  /**
   * A lease on a sandbox saved before (a gateway restart): undefined when it cannot come back (its
   * template was rebuilt, its state is gone). It resumes on first use.
   */
  async adopt(key: AffinityKey, owner: LeaseOwner, ref: SavedRef, events: LeaseEvents, options?: LeaseOptions): Promise<SandboxLease | undefined> {
    const pool = this.servers.get(ref.server);
    const sandbox = pool && (await pool.adopt(ref.sandboxId, ref.templateKey));
    if (!pool || !sandbox) return undefined;
    return new PoolLease(key, owner, () => pool.acquire(), this.admission, events, options, sandbox);
  }

  /** Deletes what a suspended sandbox saved, for a holder that will never come back. */
  async discardSaved(ref: SavedRef): Promise<void> {
    await this.saved.discard(ref.server, ref.sandboxId);
  }

  stats(): ServerPoolStats[] {
    return [...this.servers.values()].map((s) => s.stats());
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
    await Promise.allSettled([...this.servers.values()].map((s) => s.close()));
  }
}
