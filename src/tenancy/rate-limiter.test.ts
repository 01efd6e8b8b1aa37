import assert from "node:assert/strict";
import { test } from "node:test";
import { QuotaError } from "./quota-error.js";
import { RateLimiter } from "./rate-limiter.js";

test("a token bucket: a burst, then the sustained rate, with when to retry; tenants apart", () => {
  let now = 0;
  const limiter = new RateLimiter(() => now);
  const limits = { requestsPerSecond: 2, burst: 3 };
  for (let i = 0; i < 3; i++) limiter.take("a", limits);
  assert.throws(() => limiter.take("a", limits), (e: unknown) => e instanceof QuotaError && e.kind === "requests" && e.retryAfterSeconds === 1);
  limiter.take("b", limits); // another tenant has its own bucket
  now = 500; // half a second: one token back at 2/s
  limiter.take("a", limits);
  assert.throws(() => limiter.take("a", limits), QuotaError);
  now = 60_000; // refilled, but never past the burst
  for (let i = 0; i < 3; i++) limiter.take("a", limits);
  assert.throws(() => limiter.take("a", limits), QuotaError);
  const slow = { requestsPerSecond: 0.1, burst: 1 };
  limiter.take("c", slow);
  assert.throws(() => limiter.take("c", slow), (e: unknown) => e instanceof QuotaError && e.retryAfterSeconds === 10);
});

test("unlimited means no bucket at all", () => {
  const limiter = new RateLimiter(() => 0);
  for (let i = 0; i < 10_000; i++) limiter.take("local", { requestsPerSecond: Number.POSITIVE_INFINITY, burst: Number.POSITIVE_INFINITY });
});
