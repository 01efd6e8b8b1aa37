import type { Sandbox } from "../sandbox/sandbox.js";
import { QuotaError } from "./quota-error.js";

/** A tenant's hold on sandboxes: room is made before a sandbox is acquired or resumed. */
export interface SandboxQuota {
  /**
   * Room for one more running sandbox, suspending the tenant's least recently used idle one if needed
   * (its state goes to disk: nothing is lost). The returned function ends the reservation, handing over
   * the sandbox that now counts instead (or none, if acquiring failed).
   */
  reserve(): Promise<(sandbox?: Sandbox) => void>;
}

/** Counts each tenant's running sandboxes (every VM its sessions hold) against its `maxSandboxes`. */
export class TenantSandboxes {
  private readonly sandboxes = new Map<string, Set<Sandbox>>();
  private readonly reserved = new Map<string, number>();

  running(tenant: string): number {
    let n = this.reserved.get(tenant) ?? 0;
    for (const s of this.sandboxes.get(tenant) ?? []) if (s.state !== "suspended" && s.state !== "destroyed") n++;
    return n;
  }

  quotaFor(tenant: string, limit: number): SandboxQuota {
    return { reserve: () => this.reserve(tenant, limit) };
  }

  private async reserve(tenant: string, limit: number): Promise<(sandbox?: Sandbox) => void> {
    if (Number.isFinite(limit) && this.running(tenant) >= limit) {
      const idle = [...(this.sandboxes.get(tenant) ?? [])].filter((s) => s.state === "idle").sort((a, b) => a.lastUsed - b.lastUsed)[0];
      if (!idle) {
        throw new QuotaError("sandboxes", `Tenant '${tenant}' already runs ${limit} sandboxes, its limit, all of them busy; retry when a call finishes or end a session`);
      }
      await idle.suspend();
      if (this.running(tenant) >= limit) {
        throw new QuotaError("sandboxes", `Tenant '${tenant}' already runs ${limit} sandboxes, its limit; retry shortly`);
      }
    }
    this.reserved.set(tenant, (this.reserved.get(tenant) ?? 0) + 1);
    let done = false;
    return (sandbox) => {
      if (done) return;
      done = true;
      this.reserved.set(tenant, this.reserved.get(tenant)! - 1);
      if (sandbox) this.track(tenant, sandbox);
    };
  }

  private track(tenant: string, sandbox: Sandbox): void {
    let set = this.sandboxes.get(tenant);
    if (!set) this.sandboxes.set(tenant, (set = new Set()));
    if (set.has(sandbox)) return;
    set.add(sandbox);
    sandbox.on("closed", () => {
      set.delete(sandbox);
      if (set.size === 0 && this.sandboxes.get(tenant) === set) this.sandboxes.delete(tenant);
    });
  }
}
