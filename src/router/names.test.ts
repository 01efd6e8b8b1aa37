import assert from "node:assert/strict";
import { test } from "node:test";
import { qualify, splitQualified } from "./names.js";

test("qualified names split at the first separator, keeping underscores in the tool's own name", () => {
  assert.equal(qualify("memory", "read_graph"), "memory__read_graph");
  assert.deepEqual(splitQualified("memory__read_graph"), { server: "memory", name: "read_graph" });
  assert.deepEqual(splitQualified("exec__a__b"), { server: "exec", name: "a__b" });
  assert.equal(splitQualified("read_graph"), undefined);
  assert.equal(splitQualified("__x"), undefined);
});
