import { QuotaError, type QuotaKind } from "./quota-error.js";

/** Tenants' holds of something against a limit: counted in this process, or across a cluster. */
export interface TenantHolds {
  count(tenant: string): number | Promise<number>;
  /** Takes one or throws a QuotaError; the returned function gives it back (once). */
  take(tenant: string, limit: number): (() => void) | Promise<() => void>;
}

/** How many of something (sessions, streams) each tenant holds, against its limit, in this process. */
export class TenantCounter implements TenantHolds {
  private readonly counts = new Map<string, number>();

  constructor(
    private readonly kind: QuotaKind,
    /** What is counted, for messages: "open sessions", "open streams". */
    private readonly what: string,
  ) {}

  count(tenant: string): number {
    return this.counts.get(tenant) ?? 0;
  }

  /** Takes one or throws a QuotaError; the returned function gives it back (once). */
  take(tenant: string, limit: number): () => void {
    const held = this.count(tenant);
    if (held >= limit) {
      throw new QuotaError(this.kind, `Tenant '${tenant}' has ${held} ${this.what}, its limit; end one (e.g. DELETE a session) before opening another`);
    }
    this.counts.set(tenant, held + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = this.count(tenant) - 1;
      if (left > 0) this.counts.set(tenant, left);
      else this.counts.delete(tenant);
    };
  }
}
