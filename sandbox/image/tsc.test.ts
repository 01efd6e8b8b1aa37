import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { cpuModel, stableTscKhz } from "./tsc.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), "mcpvisor-tsc-test-"));
const ctx = { cacheDir, repoRoot, progress: () => undefined };
const stored = path.join(cacheDir, "images", "host-tsc.json");
const cpu = await cpuModel();
const keep = (value: { cpu: string; khz: number }) => fs.writeFileSync(stored, JSON.stringify(value));
const kept = () => (JSON.parse(fs.readFileSync(stored, "utf8")) as { khz: number }).khz;

after(() => fs.rmSync(cacheDir, { recursive: true, force: true }));

test("the TSC frequency a template key depends on stays the same across measurements on one host", async () => {
  const first = await stableTscKhz(ctx);
  assert.equal(kept(), first, "the first measurement is kept in the cache");

  // What a later process measures differs by a few kHz; it must still get the kept value.
  keep({ cpu, khz: first + 500 });
  assert.equal(await stableTscKhz(ctx), first + 500);
  keep({ cpu, khz: first - 500 });
  assert.equal(await stableTscKhz(ctx), first - 500);
});

test("another host's clock (a different CPU, or a frequency far off) replaces the kept value", async () => {
  const now = await stableTscKhz(ctx);
  keep({ cpu, khz: Math.round(now * 1.05) });
  const measured = await stableTscKhz(ctx);
  assert.ok(Math.abs(measured - now) / now < 1e-3, `${measured} kHz is a fresh measurement, not the stale ${Math.round(now * 1.05)}`);
  assert.equal(kept(), measured);

  keep({ cpu: "some other CPU", khz: measured + 500 });
  assert.notEqual(await stableTscKhz(ctx), measured + 500);
  assert.notEqual(kept(), measured + 500);
});
