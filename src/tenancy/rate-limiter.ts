import { QuotaError } from "./quota-error.js";

interface Bucket {
  tokens: number;
  updatedAt: number;
}

/** Charges a tenant's request rate: in this process, or across a cluster. Throws a QuotaError when over. */
export interface RequestRate {
  take(tenant: string, limits: { requestsPerSecond: number; burst: number }): void | Promise<void>;
}

/**
 * Requests per second per tenant, as token buckets: `burst` requests at once, refilled at
 * `requestsPerSecond`. A refused request is told when a token will be there (Retry-After).
 */
export class RateLimiter implements RequestRate {
  private readonly buckets = new Map<string, Bucket>();

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** Takes one token for `tenant`, or throws a QuotaError saying when to retry. */
  take(tenant: string, limits: { requestsPerSecond: number; burst: number }): void {
    if (!Number.isFinite(limits.requestsPerSecond)) return;
    const now = this.now();
    const bucket = this.buckets.get(tenant) ?? { tokens: limits.burst, updatedAt: now };
    bucket.tokens = Math.min(limits.burst, bucket.tokens + ((now - bucket.updatedAt) / 1000) * limits.requestsPerSecond);
    bucket.updatedAt = now;
    this.buckets.set(tenant, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return;
    }
    const wait = Math.max(1, Math.ceil((1 - bucket.tokens) / limits.requestsPerSecond));
    throw new QuotaError(
      "requests",
      `Tenant '${tenant}' sent more than ${limits.requestsPerSecond} requests per second (burst ${limits.burst}); retry after ${wait} s`,
      wait,
    );
  }
}
