// `npm test`: installs what the suite needs (npm packages, then host packages, guest images and the
// default servers' templates, through `mcpvisor build`), then runs every *.test.ts with node's runner.
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { ensureNpmDependencies } from "../bin/bootstrap.mjs";

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

const build = spawnSync(process.execPath, [join(root, "bin", "mcpvisor"), "build"], { cwd: root, stdio: "inherit" });
if (build.status !== 0) {
  console.error("mcpvisor build failed: the suite needs the guest images and templates");
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
const result = spawnSync(process.execPath, ["--import", "tsx", "--test", ...files], { cwd: root, stdio: "inherit" });
process.exit(result.status ?? 1);
