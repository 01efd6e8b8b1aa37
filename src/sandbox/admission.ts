import type { Sandbox } from "./sandbox.js";
import { VmBudget, type VmBudgetLimits } from "./vm-budget.js";
import { QuotaError } from "../tenancy/quota-error.js";
import type { TenantHolds } from "../tenancy/tenant-counter.js";

/** Whose sandbox it is: the tenant it counts against, and how many running sandboxes that tenant may have. */
export interface LeaseOwner {
  tenant: string;
  maxSandboxes: number;
}

/**
 * The one place that decides whether another VM may run: the global VM budget (every QEMU process:
 * prestarted, warm, leased) and each tenant's running sandboxes. Both make room the same way, by
 * suspending the least recently used idle sandbox (its state goes to disk: nothing is lost): any
 * tenant's for the global budget (after idle pooled VMs), the tenant's own for its quota.
 */
export class SandboxAdmission {
  private readonly budget: VmBudget;
  /** Every leased sandbox, with the tenant it counts against. */
  private readonly leased = new Map<Sandbox, string>();
  /** Admissions granted whose sandbox is still being acquired or resumed. */
  private readonly reserved = new Map<string, number>();

  constructor(
    limits: VmBudgetLimits,
    /** Ends one idle pooled VM (its slot comes back when it exits); false when there is none. */
    private readonly dropPooledVm: () => boolean,
    /**
     * In a cluster, the tenant's running sandboxes on every node: a hold is taken for each admission and
     * given back when its sandbox is suspended or ends.
     */
    private readonly cluster?: TenantHolds,
  ) {
    this.budget = new VmBudget(limits, () => this.dropPooledVm() || this.suspendLeastRecentlyUsed());
  }

  /** VMs running now against the global cap, and acquisitions waiting for one. */
  budgetStats(): { inUse: number; queued: number } {
    return { inUse: this.budget.inUse, queued: this.budget.queued };
  }

  /**
   * A slot for one more VMM process, held until `exited` settles. With `wait` false it gives up (false)
   * rather than queue: pool refills must never crowd out sessions.
   */
  async takeVmSlot(wait: boolean): Promise<{ held: boolean; hold(exited: Promise<unknown>): void; giveBack(): void }> {
    if (wait) await this.budget.take();
    else if (!this.budget.tryTake()) return { held: false, hold: () => undefined, giveBack: () => undefined };
    let given = false;
    const giveBack = () => {
      if (given) return;
      given = true;
      this.budget.release();
    };
    return { held: true, hold: (exited) => void exited.then(giveBack, giveBack), giveBack };
  }

  /** Running sandboxes of `tenant` (not suspended, not gone), counting admissions still under way. */
  running(tenant: string): number {
    let n = this.reserved.get(tenant) ?? 0;
    for (const [sandbox, owner] of this.leased) if (owner === tenant && sandbox.state !== "suspended" && sandbox.state !== "destroyed") n++;
    return n;
  }

  /**
   * Room for one more running sandbox of `owner.tenant`, suspending its least recently used idle one if
   * it is at its limit. The returned function ends the admission, handing over the sandbox that now
   * counts instead (or none, when acquiring failed). Throws QuotaError when nothing can make room.
   */
  async admit(owner: LeaseOwner): Promise<(sandbox?: Sandbox) => void> {
    const { tenant, maxSandboxes: limit } = owner;
    if (Number.isFinite(limit) && this.running(tenant) >= limit) {
      const idle = this.leastRecentlyUsedIdle(tenant);
      if (!idle) {
        throw new QuotaError("sandboxes", `Tenant '${tenant}' already runs ${limit} sandboxes, its limit, all of them busy; retry when a call finishes or end a session`);
      }
      await idle.suspend();
      if (this.running(tenant) >= limit) throw new QuotaError("sandboxes", `Tenant '${tenant}' already runs ${limit} sandboxes, its limit; retry shortly`);
    }
    const releaseHold = await this.clusterHold(owner);
    this.reserved.set(tenant, (this.reserved.get(tenant) ?? 0) + 1);
    let done = false;
    return (sandbox) => {
      if (done) return;
      done = true;
      this.reserved.set(tenant, this.reserved.get(tenant)! - 1);
      if (sandbox && !this.leased.has(sandbox) && sandbox.state !== "destroyed") {
        this.leased.set(sandbox, tenant);
        sandbox.on("closed", () => this.leased.delete(sandbox));
      }
      // The cluster-wide hold lasts while the sandbox runs: until it is suspended or ends.
      if (!sandbox || sandbox.state === "suspended" || sandbox.state === "destroyed") return releaseHold();
      const stops: (() => void)[] = [];
      const ended = () => {
        releaseHold();
        for (const stop of stops) stop();
      };
      stops.push(sandbox.on("suspended", ended), sandbox.on("closed", ended));
    };
  }

  /**
   * The tenant's hold on one running sandbox across the cluster. At the limit there, one of its idle
   * sandboxes on this node is suspended to make room, once; else the QuotaError stands.
   */
  private async clusterHold({ tenant, maxSandboxes: limit }: LeaseOwner): Promise<() => void> {
    if (!this.cluster || !Number.isFinite(limit)) return () => undefined;
    try {
      return await this.cluster.take(tenant, limit);
    } catch (error) {
      const idle = error instanceof QuotaError ? this.leastRecentlyUsedIdle(tenant) : undefined;
      if (!idle) throw error;
      await idle.suspend();
      return this.cluster.take(tenant, limit);
    }
  }

  private suspendLeastRecentlyUsed(): boolean {
    const idle = this.leastRecentlyUsedIdle();
    if (!idle) return false;
    void idle.suspend();
    return true;
  }

  /** The one LRU choice: an idle leased sandbox that may be suspended, of `tenant` when given. */
  private leastRecentlyUsedIdle(tenant?: string): Sandbox | undefined {
    let oldest: Sandbox | undefined;
    for (const [sandbox, owner] of this.leased) {
      if (tenant !== undefined && owner !== tenant) continue;
      if (sandbox.state !== "idle" || !sandbox.suspendable) continue;
      if (!oldest || sandbox.lastUsed < oldest.lastUsed) oldest = sandbox;
    }
    return oldest;
  }

  /** Fails every acquisition waiting for a VM (shutdown). */
  close(): void {
    this.budget.close();
  }
}
