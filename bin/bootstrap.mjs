// Installs the npm dependencies when they are missing or older than package-lock.json. Plain JS with no
// dependencies, because it runs before any exist: `npm start` and `npm test` on a fresh clone start here.
import { spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

export function ensureNpmDependencies() {
  const installed = join(root, "node_modules", ".package-lock.json");
  const lock = join(root, "package-lock.json");
  if (existsSync(installed) && statSync(installed).mtimeMs >= statSync(lock).mtimeMs) return;
  process.stderr.write("[mcpvisor] installing npm dependencies (npm ci)\n");
  const result = spawnSync("npm", ["ci", "--no-audit", "--no-fund"], { cwd: root, stdio: ["ignore", 2, 2] });
  if (result.status !== 0) {
    process.stderr.write("[mcpvisor] npm ci failed; see the output above\n");
    process.exit(1);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) ensureNpmDependencies();
