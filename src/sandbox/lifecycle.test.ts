import assert from "node:assert/strict";
import { test } from "node:test";
import { canTransition, Lifecycle, type SandboxState } from "./lifecycle.js";

const ALL: SandboxState[] = ["pooled", "resuming", "active", "idle", "suspending", "suspended", "destroyed"];
const LEGAL = new Set([
  "pooled>resuming", "pooled>destroyed",
  "resuming>idle", "resuming>destroyed",
  "idle>active", "idle>suspending", "idle>destroyed",
  "active>idle", "active>destroyed",
  "suspending>suspended", "suspending>idle", "suspending>destroyed",
  "suspended>resuming", "suspended>destroyed",
]);

test("every edge of the lifecycle is legal or illegal exactly as designed", () => {
  for (const from of ALL) {
    for (const to of ALL) {
      assert.equal(canTransition(from, to), LEGAL.has(`${from}>${to}`), `${from} -> ${to}`);
    }
  }
});

test("an illegal transition throws a typed error and leaves the state unchanged", () => {
  const life = new Lifecycle("pooled");
  assert.throws(() => life.transition("active"), { code: "ILLEGAL_TRANSITION" });
  assert.equal(life.state, "pooled");
});

test("transitions are reported to listeners in order, and destroyed is final", () => {
  const life = new Lifecycle("pooled");
  const seen: string[] = [];
  life.onTransition(({ from, to }) => seen.push(`${from}>${to}`));
  life.transition("resuming");
  life.transition("idle");
  life.transition("active");
  life.transition("idle");
  life.transition("destroyed");
  assert.deepEqual(seen, ["pooled>resuming", "resuming>idle", "idle>active", "active>idle", "idle>destroyed"]);
  for (const to of ALL) assert.throws(() => life.transition(to));
});
