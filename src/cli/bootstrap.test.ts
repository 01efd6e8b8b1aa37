import assert from "node:assert/strict";
import { mkdir, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
// @ts-expect-error: plain JS with no types (it runs before any dependency is installed)
import { npmDependenciesCurrent } from "../../bin/bootstrap.mjs";
import { scratchDir } from "../../test/scratch-dir.js";

test("npm dependencies are reinstalled when the lock's content changes, not when only its time does", async () => {
  const dir = await scratchDir("mcpv-bootstrap");
  await writeFile(join(dir, "package-lock.json"), '{"lockfileVersion":3}');
  assert.equal(npmDependenciesCurrent(dir), false, "nothing installed");
  await mkdir(join(dir, "node_modules"));
  await writeFile(join(dir, "node_modules", ".package-lock.json"), "{}");
  assert.equal(npmDependenciesCurrent(dir), true, "installed after the lock last changed (no record yet)");
  // A checkout or a new worktree: the same lock, newer than the install.
  const later = new Date(Date.now() + 60_000);
  await utimes(join(dir, "package-lock.json"), later, later);
  assert.equal(npmDependenciesCurrent(dir), true, "same content, newer time: nothing to install");
  await writeFile(join(dir, "package-lock.json"), '{"lockfileVersion":3,"packages":{}}');
  assert.equal(npmDependenciesCurrent(dir), false, "the lock changed");
});
