import assert from "node:assert/strict";
import { test } from "node:test";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { SessionEventStore } from "./event-store.js";

const note = (n: number): JSONRPCMessage => ({ jsonrpc: "2.0", method: "notifications/message", params: { n } });

test("replays only the events after the given one, on the same stream", async () => {
  const store = new SessionEventStore();
  const a1 = await store.storeEvent("a", note(1));
  await store.storeEvent("b", note(2));
  await store.storeEvent("a", note(3));
  const replayed: unknown[] = [];
  const stream = await store.replayEventsAfter(a1, { send: async (_id, m) => void replayed.push((m as { params: unknown }).params) });
  assert.equal(stream, "a");
  assert.deepEqual(replayed, [{ n: 3 }]);
  assert.equal(await store.getStreamIdForEventId(a1), "a");
});

test("keeps a bounded number of events; a too-old event id is refused", async () => {
  const store = new SessionEventStore(2);
  const first = await store.storeEvent("a", note(1));
  await store.storeEvent("a", note(2));
  await store.storeEvent("a", note(3));
  await assert.rejects(store.replayEventsAfter(first, { send: async () => undefined }), /too old/);
});
