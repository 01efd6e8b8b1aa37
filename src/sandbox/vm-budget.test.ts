import assert from "node:assert/strict";
import { test } from "node:test";
import { VmBudget } from "./vm-budget.js";

test("slots are capped; waiters get freed slots in order; a full queue is BUSY at once", async () => {
  let reclaims = 0;
  const budget = new VmBudget({ maxVms: 2, maxQueue: 1, queueTimeoutMs: 5_000 }, () => (reclaims++, false));
  assert.equal(budget.tryTake(), true);
  await budget.take();
  assert.equal(budget.tryTake(), false);
  const waiting = budget.take();
  await assert.rejects(budget.take(), { code: "BUSY" });
  assert.equal(reclaims, 2, "each blocked take first tries to reclaim an idle pooled VM");
  budget.release();
  await waiting;
  assert.equal(budget.inUse, 2);
  budget.release();
  budget.release();
  assert.equal(budget.inUse, 0);
});

test("a waiter that is not served in time gets BUSY, and the queue forgets it", async () => {
  const budget = new VmBudget({ maxVms: 1, maxQueue: 4, queueTimeoutMs: 50 }, () => false);
  await budget.take();
  await assert.rejects(budget.take(), (err: Error & { code?: string; retryable?: boolean }) => {
    assert.equal(err.code, "BUSY");
    assert.equal(err.retryable, true);
    assert.match(err.message, /within 50 ms/);
    return true;
  });
  assert.equal(budget.queued, 0);
});
