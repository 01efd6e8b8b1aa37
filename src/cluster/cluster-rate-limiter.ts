import { QuotaError } from "../tenancy/quota-error.js";
import type { RequestRate } from "../tenancy/rate-limiter.js";
import { inCluster } from "./errors.js";
import { keys, type Redis } from "./redis.js";

/**
 * A token bucket in Redis, refilled by Redis's own clock so that nodes' clocks do not matter.
 * KEYS: bucket. ARGV: rate per second, burst. Returns {1} when a token was taken, else {0, ms to wait}.
 */
const TAKE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tokens, updated = burst, now
local b = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
if b[1] then tokens, updated = tonumber(b[1]), tonumber(b[2]) end
tokens = math.min(burst, tokens + math.max(0, now - updated) / 1000 * rate)
local taken = 0
if tokens >= 1 then tokens = tokens - 1; taken = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
if taken == 1 then return {1} end
return {0, math.ceil((1 - tokens) / rate * 1000)}`;

/**
 * Tenants' request rates across the cluster: one bucket per tenant in Redis, charged once per request
 * at the node it reached (a request forwarded to a session's owner is not charged again).
 */
export class ClusterRateLimiter implements RequestRate {
  constructor(private readonly redis: Redis) {}

  async take(tenant: string, limits: { requestsPerSecond: number; burst: number }): Promise<void> {
    if (!Number.isFinite(limits.requestsPerSecond)) return;
    const [taken, waitMs] = (await inCluster("charging the request rate", () => this.redis.eval(TAKE, 1, keys.bucket(tenant), String(limits.requestsPerSecond), String(limits.burst)))) as [number, number?];
    if (taken === 1) return;
    const wait = Math.max(1, Math.ceil((waitMs ?? 1000) / 1000));
    throw new QuotaError(
      "requests",
      `Tenant '${tenant}' sent more than ${limits.requestsPerSecond} requests per second (burst ${limits.burst}) across the cluster; retry after ${wait} s`,
      wait,
    );
  }
}
