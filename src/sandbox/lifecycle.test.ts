import assert from "node:assert/strict";
import { test } from "node:test";
import { canTemplateTransition, canTransition, checkTransition, TemplateStatus, type SandboxState, type TemplateState } from "./lifecycle.js";

const ALL: SandboxState[] = ["pooled", "resuming", "active", "idle", "suspending", "suspended", "destroyed"];
const LEGAL = new Set([
  "pooled>resuming", "pooled>destroyed",
  "resuming>idle", "resuming>destroyed",
  "idle>active", "idle>suspending", "idle>destroyed",
  "active>idle", "active>destroyed",
  "suspending>suspended", "suspending>idle", "suspending>destroyed",
  "suspended>resuming", "suspended>destroyed",
]);

test("every edge of the sandbox lifecycle is legal or illegal exactly as designed", () => {
  for (const from of ALL) {
    for (const to of ALL) {
      assert.equal(canTransition(from, to), LEGAL.has(`${from}>${to}`), `${from} -> ${to}`);
      if (LEGAL.has(`${from}>${to}`)) checkTransition("x", from, to);
      else assert.throws(() => checkTransition("x", from, to), { code: "ILLEGAL_TRANSITION" });
    }
  }
});

test("a template is building, then ready or failed; a ready one may be rebuilt; failed is final", () => {
  const states: TemplateState[] = ["building", "ready", "failed"];
  const legal = new Set(["building>ready", "building>failed", "ready>building"]);
  for (const from of states) for (const to of states) assert.equal(canTemplateTransition(from, to), legal.has(`${from}>${to}`), `${from} -> ${to}`);
  const status = new TemplateStatus("building the image");
  status.set("building", "building the template");
  assert.equal(status.reason, "building the template");
  status.set("ready");
  assert.equal(status.reason, undefined);
  status.set("building", "rebuilding");
  status.set("failed", "boom");
  assert.throws(() => status.set("ready"), { code: "ILLEGAL_TRANSITION" });
  assert.equal(status.state, "failed");
});
