import assert from "node:assert/strict";
import { test } from "node:test";
import { CredentialWatch } from "./credential-watch.js";
import { LOCAL_PRINCIPAL, type Principal } from "./principal.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const withCredential = (credential: Principal["credential"]): Principal => ({ ...LOCAL_PRINCIPAL, tenant: "acme", credential });

test("a connection ends when its token stops being accepted, not before; one released is left alone", async () => {
  const watch = new CredentialWatch();
  const ended: string[] = [];
  watch.hold(withCredential({ expiresAt: Date.now() + 60 }), (why) => ended.push(`soon: ${why}`));
  const release = watch.hold(withCredential({ expiresAt: Date.now() + 60 }), (why) => ended.push(`released: ${why}`));
  release();
  assert.deepEqual(ended, []);
  await sleep(150);
  assert.deepEqual(ended, ["soon: the access token expired; reconnect with a fresh one"]);
  assert.equal(watch.size, 0);
});

test("a token valid for longer than a timer can wait (about 24.8 days) gets one timer, not one a millisecond", async (t) => {
  // Node fires a setTimeout longer than 2^31-1 ms after 1 ms: uncapped, the watch would wake every millisecond.
  const timers = t.mock.method(globalThis, "setTimeout");
  const watch = new CredentialWatch();
  let ended = false;
  const release = watch.hold(withCredential({ expiresAt: Date.now() + 30 * 24 * 3600 * 1000 }), () => (ended = true));
  await sleep(50);
  const long = timers.mock.calls.filter((call) => Number(call.arguments[1]) > 60_000);
  assert.equal(long.length, 1, `${long.length} expiry timers armed in 50 ms`);
  assert.equal(ended, false);
  release();
});

test("a recheck ends exactly the connections it no longer accepts", () => {
  const watch = new CredentialWatch();
  const ended: string[] = [];
  watch.hold(withCredential({ keySha256: "aa" }), (why) => ended.push(`aa: ${why}`));
  watch.hold(withCredential({ keySha256: "bb" }), (why) => ended.push(`bb: ${why}`));
  watch.hold(LOCAL_PRINCIPAL, (why) => ended.push(`local: ${why}`));
  watch.recheck((p) => p.credential?.keySha256 !== "aa", "the API key was revoked");
  assert.deepEqual(ended, ["aa: the API key was revoked"]);
  watch.recheck((p) => p.credential?.keySha256 !== "aa", "the API key was revoked");
  assert.equal(ended.length, 1, "an ended connection is no longer watched");
  assert.equal(watch.size, 2);
});
