// Installs the npm dependencies when they are missing or were installed from another package-lock.json.
// Plain JS with no dependencies, because it runs before any exist: `npm start` and `npm test` on a fresh
// clone start here.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
/** Holds the SHA-256 of the package-lock.json node_modules was installed from. */
const INSTALLED_LOCK = ".mcpvisor-installed-lock";

function lockHash(dir) {
  return createHash("sha256").update(readFileSync(join(dir, "package-lock.json"))).digest("hex");
}

/**
 * Whether `dir/node_modules` was installed from `dir/package-lock.json` as it is now. Decided by the
 * lock's content, recorded at install, not by file times: a checkout or a new git worktree gives the
 * lock a new time without changing it, and reinstalling then (through a node_modules another checkout
 * shares) would empty node_modules under everything using it.
 */
export function npmDependenciesCurrent(dir = root) {
  const modules = join(dir, "node_modules");
  if (!existsSync(join(modules, ".package-lock.json"))) return false;
  const record = join(modules, INSTALLED_LOCK);
  if (existsSync(record)) return readFileSync(record, "utf8").trim() === lockHash(dir);
  // Installed before this record existed: trusted as before (installed after the lock last changed), once.
  const current = statSync(join(modules, ".package-lock.json")).mtimeMs >= statSync(join(dir, "package-lock.json")).mtimeMs;
  if (current) writeFileSync(record, lockHash(dir));
  return current;
}

export function ensureNpmDependencies() {
  if (npmDependenciesCurrent()) return;
  process.stderr.write("[mcpvisor] installing npm dependencies (npm ci)\n");
  const result = spawnSync("npm", ["ci", "--no-audit", "--no-fund"], { cwd: root, stdio: ["ignore", 2, 2] });
  if (result.status !== 0) {
    process.stderr.write("[mcpvisor] npm ci failed; see the output above\n");
    process.exit(1);
  }
  writeFileSync(join(root, "node_modules", INSTALLED_LOCK), lockHash(root));
}

if (import.meta.url === `file://${process.argv[1]}`) ensureNpmDependencies();
