import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { mcpPreparation } from "../router/catalog.js";
import { createLogger } from "../telemetry/log.js";
import { scratchDir } from "../../test/scratch-dir.js";
import { FAKE_VM_SPEC, FaultInjectingDriver } from "./fault-injecting-driver.js";
import { fakeManifest } from "./pool.fixture.js";
import { TemplateStore } from "./template.js";
import { sandboxUnits } from "../config/sandbox-unit.js";

test("a stored template is reused; one whose meta.json does not fit, or whose state was altered, is rebuilt", async () => {
  const driver = new FaultInjectingDriver();
  const store = new TemplateStore(driver, await scratchDir("mcpv-templates"), createLogger("silent"), mcpPreparation);
  const [unit] = sandboxUnits([fakeManifest()], "servers");
  let builds = 0;
  // A build reports its cold boot; a template that is reused reports nothing.
  const ensure = () => store.ensure(unit!, FAKE_VM_SPEC, (line) => void (line.includes("cold boot") && builds++));
  const first = await ensure();
  await ensure();
  assert.equal(builds, 1, "reused");

  await writeFile(join(first.dir, "meta.json"), JSON.stringify({ ...first.meta, format: 6 }));
  const rebuilt = await ensure();
  assert.equal(builds, 2, "an older format is rebuilt, not trusted");
  assert.equal(rebuilt.meta.format, 7);

  await writeFile(rebuilt.snapshot.statePath, (await readFile(rebuilt.snapshot.statePath, "utf8")) + " ");
  await assert.rejects(store.verify(rebuilt), { code: "SNAPSHOT_CORRUPT", message: /device state checksum mismatch/ });
  await ensure();
  assert.equal(builds, 3, "a damaged one is rebuilt");
});
