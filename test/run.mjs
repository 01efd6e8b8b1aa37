// `npm test`: installs the npm packages, type-checks, runs the unit tests, then installs what the rest
// needs (host packages, guest images and the default servers' templates, through `mcpvisor build`) and
// runs the end-to-end tests, all with node's test runner. Arguments keep the test files whose path
// contains one of them. A phase that fails makes the exit code non-zero; a unit test that fails does not
// keep the end-to-end tests from running, a failed build does.
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { ensureNpmDependencies } from "../bin/bootstrap.mjs";

/**
 * Which tests need the guest images, by where they live: test/ holds the end-to-end tests (a real
 * gateway, microVMs, real sockets), sandbox/image/ builds and boots images, src/sandbox/qemu/ drives
 * real QEMU. Every other *.test.ts is a unit test: it needs no image and no VM (a fault-injecting
 * driver stands in for QEMU), and runs before the build. A new test that boots a VM goes in one of these.
 */
const NEEDS_IMAGES = ["test", join("sandbox", "image"), join("src", "sandbox", "qemu")];

const root = fileURLToPath(new URL("..", import.meta.url));
ensureNpmDependencies();

const typecheck = spawnSync(process.execPath, [join(root, "node_modules", "typescript", "bin", "tsc"), "--noEmit"], {
  cwd: root,
  stdio: "inherit",
});
if (typecheck.status !== 0) {
  console.error("type check failed");
  process.exit(1);
}

function findTests(dir) {
  const found = [];
  for (const entry of readdirSync(dir)) {
    if (entry === "node_modules" || entry.startsWith(".")) continue;
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) found.push(...findTests(path));
    else if (entry.endsWith(".test.ts")) found.push(path);
  }
  return found;
}

const only = process.argv.slice(2);
const files = ["src", "sandbox", "servers", "test"]
  .flatMap((d) => findTests(join(root, d)))
  .map((f) => relative(root, f))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort();
const needsImages = (file) => NEEDS_IMAGES.some((dir) => file.startsWith(dir + sep));
const unit = files.filter((f) => !needsImages(f));
const endToEnd = files.filter(needsImages);

const runTests = (phase, list) => {
  if (list.length === 0) return true;
  console.log(`\n${phase}: ${list.length} test files`);
  return spawnSync(process.execPath, ["--import", "tsx", "--test", ...list], { cwd: root, stdio: "inherit" }).status === 0;
};

const unitPassed = runTests("unit tests", unit);
if (endToEnd.length === 0) process.exit(unitPassed ? 0 : 1);

const build = spawnSync(process.execPath, [join(root, "bin", "mcpvisor"), "build"], { cwd: root, stdio: "inherit" });
if (build.status !== 0) {
  console.error("mcpvisor build failed: the end-to-end tests need the guest images and templates");
  process.exit(1);
}
const endToEndPassed = runTests("end-to-end tests", endToEnd);
process.exit(unitPassed && endToEndPassed ? 0 : 1);
