import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { loadManifests } from "./load.js";
import { scratchDir } from "../../test/scratch-dir.js";

async function dirWith(files: Record<string, string>): Promise<string> {
  const dir = await scratchDir("mcpv-manifests");
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  return dir;
}

const good = { name: "ok", source: { kind: "bundle", entry: "x.ts" }, command: "node", args: ["server.mjs"] };

test("a valid manifest loads with defaults filled in", async () => {
  const [manifest] = await loadManifests(await dirWith({ "ok.json": JSON.stringify(good) }));
  assert.equal(manifest!.guest.memoryMiB, 256);
  assert.equal(manifest!.timeouts.callMs, 30_000);
  assert.equal(manifest!.network, false);
});

test("a bad manifest names the file and the field, and nothing loads", async () => {
  const dir = await dirWith({
    "ok.json": JSON.stringify(good),
    "bad.json": JSON.stringify({ ...good, name: "bad", guest: { memoryMiB: "lots" } }),
  });
  await assert.rejects(loadManifests(dir), (err: Error) => {
    assert.match(err.message, /bad\.json/);
    assert.match(err.message, /guest\.memoryMiB/);
    return true;
  });
});

test("unknown fields, ranges in versions, network devices and invalid JSON are refused", async () => {
  for (const [text, field] of [
    [JSON.stringify({ ...good, name: "x", colour: "red" }), /colour|Unrecognized/],
    [JSON.stringify({ ...good, name: "x", source: { kind: "npm", package: "p", version: "^1.0.0" } }), /source\.version/],
    [JSON.stringify({ ...good, name: "x", network: true }), /network/],
    ["{ nope", /not valid JSON/],
  ] as const) {
    await assert.rejects(loadManifests(await dirWith({ "x.json": text })), field);
  }
});

test("asking for a server that has no manifest is an error naming it", async () => {
  await assert.rejects(loadManifests(await dirWith({ "ok.json": JSON.stringify(good) }), ["ok", "ghost"]), /ghost/);
});
