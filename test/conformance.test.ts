import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { REPO_ROOT } from "../src/main.js";
import { startReadyGateway } from "./helpers.js";

// The official suite (0.1.13: later versions need Node 22), run against our conformance fixture hosted in
// a microVM behind the per-server Streamable HTTP endpoint: every scenario must pass, DNS rebinding too.
test("the official MCP conformance suite passes every scenario through the gateway", { timeout: 240_000 }, async () => {
  const gateway = await startReadyGateway({ servers: ["conformance"] });
  try {
    const cli = join(REPO_ROOT, "node_modules", "@modelcontextprotocol", "conformance", "dist", "index.js");
    const url = `http://127.0.0.1:${gateway.port}/servers/conformance/mcp`;
    const run = await promisify(execFile)(process.execPath, [cli, "server", "--url", url, "--suite", "all"], { timeout: 180_000 }).catch(
      (err: { stdout?: string; stderr?: string; code?: number }) => err,
    );
    const stdout = String(run.stdout ?? "");
    const failures = stdout.split("\n").filter((line) => line.startsWith("✗"));
    // The suite's summary line is not echoed: CI would read it as this suite's own summary.
    const total = /Total: (\d+) passed, (\d+) failed/.exec(stdout);
    assert.ok(total, `no summary from the conformance suite:\n${stdout.slice(-2000)}\n${String(run.stderr ?? "").slice(-2000)}`);
    assert.deepEqual(failures, [], "failed scenarios");
    assert.equal(Number(total[2]), 0);
    assert.ok(Number(total[1]) >= 44, `expected at least 44 checks, got ${total[1]}`);
  } finally {
    await gateway.close();
  }
});
