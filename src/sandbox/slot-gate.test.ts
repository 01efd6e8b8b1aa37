import assert from "node:assert/strict";
import { test } from "node:test";
import { eventually } from "../../test/eventually.js";
import { SlotGate } from "./slot-gate.js";

test("a run gate grants its slots in arrival order, each once, and a slice's end frees its slot", async () => {
  const gate = new SlotGate(1, 60_000);
  const order: string[] = [];
  const leaves = new Map<string, () => void>();
  for (const name of ["a", "b", "c"]) gate.enter((leave) => (order.push(name), leaves.set(name, leave)));
  assert.deepEqual(order, ["a"]);
  assert.deepEqual(gate.stats(), { running: 1, waiting: 2 });
  leaves.get("a")!();
  leaves.get("a")!(); // twice: still one slot
  assert.deepEqual(order, ["a", "b"]);
  assert.deepEqual(gate.stats(), { running: 1, waiting: 1 });

  const sliced = new SlotGate(1, 20);
  const got: string[] = [];
  sliced.enter(() => got.push("long")); // never gives its slot back itself
  sliced.enter(() => got.push("next"));
  await eventually(() => got.includes("next"), "the first slice ended");
  assert.deepEqual(sliced.stats(), { running: 1, waiting: 0 });
});

test("a run gate of 0 slots lets everything through", () => {
  const gate = new SlotGate(0, 50);
  let granted = 0;
  for (let i = 0; i < 5; i++) gate.enter(() => granted++);
  assert.equal(granted, 5);
  assert.deepEqual(gate.stats(), { running: 0, waiting: 0 });
});
