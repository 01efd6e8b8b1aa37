import assert from "node:assert/strict";
import { test } from "node:test";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { SessionEventStore } from "./event-store.js";

const note = (n: number): JSONRPCMessage => ({ jsonrpc: "2.0", method: "notifications/message", params: { n } });

test("replays only the messages after the given event, on the same stream; priming events carry none", () => {
  const store = new SessionEventStore();
  const primed = store.add("a", undefined);
  const a1 = store.add("a", note(1));
  store.add("b", note(2));
  const a3 = store.add("a", note(3));
  assert.deepEqual(store.after(a1), [{ id: a3, message: note(3) }]);
  assert.deepEqual(store.after(primed).map((e) => e.message), [note(1), note(3)]);
  assert.equal(store.streamOf(a1), "a");
});

test("keeps a bounded number of events; a too-old event id is unknown", () => {
  const store = new SessionEventStore(2);
  const first = store.add("a", note(1));
  store.add("a", note(2));
  store.add("a", note(3));
  assert.equal(store.streamOf(first), undefined);
  assert.deepEqual(store.after(first), []);
});

test("a stream delivered whole is forgotten; the others stay resumable", () => {
  const store = new SessionEventStore();
  const a1 = store.add("a", note(1));
  const b1 = store.add("b", note(2));
  const b2 = store.add("b", note(3));
  store.dropStream("a");
  assert.equal(store.streamOf(a1), undefined);
  assert.deepEqual(store.after(b1), [{ id: b2, message: note(3) }]);
});
