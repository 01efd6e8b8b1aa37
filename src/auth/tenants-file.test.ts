import assert from "node:assert/strict";
import { test } from "node:test";
import { ApiKeys, generateKey, hashKey, KEY_PREFIX } from "./api-keys.js";
import { DEFAULT_LIMITS, limitsOf, parseTenantsFile } from "./tenants-file.js";

test("a tenants file's mistakes are named, field by field", () => {
  assert.throws(() => parseTenantsFile("t.json", "{"), /t\.json: not valid JSON/);
  assert.throws(
    () => parseTenantsFile("t.json", JSON.stringify({ tenants: { a: {} }, keys: [{ id: "k", tenant: "b", sha256: "abc" }] })),
    /keys\.0\.sha256: must be 64 lowercase hex digits.*keys\.0\.tenant: no tenant 'b'/,
  );
  const hash = hashKey("x");
  assert.throws(
    () => parseTenantsFile("t.json", JSON.stringify({ tenants: { a: {} }, keys: [{ id: "k", tenant: "a", sha256: hash }, { id: "k", tenant: "a", sha256: hash }] })),
    /key id 'k' is used twice/,
  );
  assert.throws(() => parseTenantsFile("t.json", JSON.stringify({ tenants: { "a b": {} } })), /tenant names are letters/);
  assert.throws(() => parseTenantsFile("t.json", JSON.stringify({ tenants: { local: {} } })), /'local' is reserved/);
  assert.throws(() => parseTenantsFile("t.json", JSON.stringify({ defaults: { burst: 0 } })), /defaults\.burst/);
});

test("limits: a tenant's own over the file's defaults over the built-in ones", () => {
  const file = parseTenantsFile("t.json", JSON.stringify({ defaults: { maxSessions: 5 }, tenants: { a: { limits: { maxSandboxes: 1 } }, b: {} } }));
  assert.deepEqual(limitsOf(file, "a"), { ...DEFAULT_LIMITS, maxSessions: 5, maxSandboxes: 1 });
  assert.deepEqual(limitsOf(file, "b"), { ...DEFAULT_LIMITS, maxSessions: 5 });
  assert.deepEqual(limitsOf(undefined, "c"), DEFAULT_LIMITS);
});

test("API keys: new keys are long and random; only the right key finds its entry", () => {
  const one = generateKey();
  const two = generateKey();
  assert.ok(one.key.startsWith(KEY_PREFIX) && one.key.length >= 45);
  assert.notEqual(one.key, two.key);
  assert.equal(one.sha256, hashKey(one.key));
  const keys = new ApiKeys([
    { id: "one", tenant: "a", sha256: one.sha256 },
    { id: "two", tenant: "b", sha256: two.sha256 },
  ]);
  assert.equal(keys.find(one.key)?.id, "one");
  assert.equal(keys.find(two.key)?.id, "two");
  assert.equal(keys.find(one.key.slice(0, -1)), undefined);
  assert.equal(keys.find(one.sha256), undefined, "the hash is not a key");
  assert.equal(keys.find(""), undefined);
});
