import assert from "node:assert/strict";
import { readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { SessionStore, type StoredSession } from "./session-store.js";
import { scratchDir } from "../../test/scratch-dir.js";

const session = (id: string, savedAt = new Date().toISOString()): StoredSession => ({
  tenant: "local",
  id,
  route: "memory",
  transport: "streamable-http",
  protocolVersion: "2025-11-25",
  clientCapabilities: {},
  sandboxes: { memory: { sandboxId: "vm-1", templateKey: "k" } },
  savedAt,
});

test("saves atomically, loads, deletes; ids that are not ids are refused", async () => {
  const dir = await scratchDir("mcpv-store");
  const store = new SessionStore(dir);
  await store.save(session("abc-1"));
  assert.equal((await store.load("abc-1"))?.route, "memory");
  assert.deepEqual(await readdir(dir), ["abc-1.json"], "no temporary file is left behind");
  assert.equal(await store.load("../etc/passwd"), undefined);
  await store.delete("abc-1");
  assert.equal(await store.load("abc-1"), undefined);
});

test("a torn temporary file never shadows the record, and old records expire", async () => {
  const dir = await scratchDir("mcpv-store");
  const store = new SessionStore(dir);
  await store.save(session("old", new Date(Date.now() - 10_000).toISOString()));
  await store.save(session("new"));
  await writeFile(join(dir, "new.json.tmp-999"), "{ torn");
  assert.equal((await store.load("new"))?.id, "new");
  const expired = await store.expire(5_000);
  assert.deepEqual(expired.map((s) => s.id), ["old"]);
  assert.equal(await store.load("old"), undefined);
  assert.equal((await store.load("new"))?.id, "new");
});

test("counts each tenant's saved sessions and knows the least recently saved, also after a restart", async () => {
  const dir = await scratchDir("mcpv-store");
  const store = new SessionStore(dir);
  const at = (ago: number) => new Date(Date.now() - ago).toISOString();
  await store.save({ ...session("a1", at(3_000)), tenant: "acme" });
  await store.save({ ...session("a2", at(1_000)), tenant: "acme" });
  await store.save({ ...session("g1", at(9_000)), tenant: "globex" });
  assert.equal(await store.countFor("acme"), 2);
  assert.equal(await store.oldestOf("acme"), "a1");
  await store.save({ ...session("a1"), tenant: "acme" }); // saved again: now the most recent
  assert.equal(await store.oldestOf("acme"), "a2");
  await store.delete("a2");
  assert.equal(await store.countFor("acme"), 1);

  const restarted = new SessionStore(dir);
  await restarted.index();
  assert.deepEqual([await restarted.countFor("acme"), await restarted.countFor("globex"), await restarted.oldestOf("globex")], [1, 1, "g1"]);
});
