import assert from "node:assert/strict";
import { test } from "node:test";
import { jsonDeeperThan } from "./json-depth.js";

test("counts nesting of objects and arrays, not brackets inside strings", () => {
  assert.equal(jsonDeeperThan('{"a":[1,{"b":2}]}', 3), false);
  assert.equal(jsonDeeperThan('{"a":[1,{"b":2}]}', 2), true);
  assert.equal(jsonDeeperThan(`{"s":"${"[".repeat(100)}"}`, 2), false);
  assert.equal(jsonDeeperThan(`{"s":"a\\"[[[["}`, 1), false);
  assert.equal(jsonDeeperThan("[".repeat(65) + "]".repeat(65), 64), true);
  assert.equal(jsonDeeperThan("[".repeat(64) + "]".repeat(64), 64), false);
});
