import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { REPO_ROOT } from "../src/main.js";
import { connect, sh, startReadyGateway } from "./helpers.js";

const run = promisify(execFile);
const PROM_DIR = join(REPO_ROOT, "deploy", "prometheus");
let bin = "";

before(async () => {
  // Debian's prometheus package: found, or fetched and unpacked into the cache (idempotent).
  const { stdout } = await run(join(PROM_DIR, "install.sh"), [], { timeout: 300_000 });
  bin = stdout.trim().split("\n").pop()!;
});

async function promtool(...args: string[]): Promise<string> {
  const { stdout, stderr } = await run(join(bin, "promtool"), args, { cwd: PROM_DIR, timeout: 60_000 });
  return stdout + stderr;
}

test("promtool accepts the scrape config and the alert rules, and the rules' unit tests pass", async () => {
  assert.match(await promtool("check", "config", "prometheus.yml"), /SUCCESS: prometheus\.yml is valid/);
  const rules = await promtool("check", "rules", "alerts.yml");
  assert.match(rules, /SUCCESS: 8 rules found/);
  assert.match(await promtool("test", "rules", "alerts.test.yml"), /SUCCESS/);
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

interface QueryResult {
  status: string;
  data: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
}

let prometheus: ChildProcess | undefined;
let dataDir = "";
after(async () => {
  if (prometheus && prometheus.exitCode === null) {
    const exited = new Promise((r) => prometheus!.once("exit", r));
    prometheus.kill("SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    if (prometheus.exitCode === null) prometheus.kill("SIGKILL");
  }
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

test("a real Prometheus scrapes a running gateway and sees its tool calls", { timeout: 90_000 }, async () => {
  const gateway = await startReadyGateway({ servers: ["exec"] });
  try {
    dataDir = await mkdtemp(join(tmpdir(), "mcpv-prometheus-"));
    const config = join(dataDir, "prometheus.yml");
    await writeFile(
      config,
      [
        "global: { scrape_interval: 1s, evaluation_interval: 1s }",
        `rule_files: [${JSON.stringify(join(PROM_DIR, "alerts.yml"))}]`,
        "scrape_configs:",
        "  - job_name: mcpvisor",
        "    metrics_path: /metrics",
        `    static_configs: [{ targets: ["127.0.0.1:${gateway.port}"] }]`,
        "",
      ].join("\n"),
    );
    const port = await freePort();
    let output = "";
    prometheus = spawn(
      join(bin, "prometheus"),
      [`--config.file=${config}`, `--storage.tsdb.path=${join(dataDir, "data")}`, `--web.listen-address=127.0.0.1:${port}`],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    prometheus.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    prometheus.stderr!.on("data", (chunk: Buffer) => (output = (output + chunk.toString()).slice(-20_000)));
    const api = `http://127.0.0.1:${port}/api/v1`;

    const client = await connect(gateway.url("exec"));
    for (let i = 0; i < 3; i++) assert.equal((await sh(client, `echo ${i}`)).exitCode, 0);
    await client.callTool({ name: "run", arguments: { command: "sleep 2", timeoutMs: 50 } });

    const query = async (q: string): Promise<QueryResult["data"]["result"]> => {
      try {
        const res = await fetch(`${api}/query?query=${encodeURIComponent(q)}`);
        if (!res.ok) return [];
        return ((await res.json()) as QueryResult).data.result;
      } catch {
        return []; // not listening yet
      }
    };
    const deadline = Date.now() + 30_000;
    let calls: QueryResult["data"]["result"] = [];
    const want = (outcome: string, n: number) =>
      calls.some((s) => s.metric.server === "exec" && s.metric.tool === "run" && s.metric.outcome === outcome && Number(s.value[1]) === n);
    while (!(want("ok", 3) && want("tool_error", 1))) {
      if (Date.now() > deadline || prometheus.exitCode !== null) {
        assert.fail(`Prometheus never had the tool calls (last result ${JSON.stringify(calls)}); its output:\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 250));
      calls = await query("mcpvisor_tool_calls_total");
    }
    for (const s of calls) assert.equal(s.metric.job, "mcpvisor");

    const up = await query('up{job="mcpvisor"}');
    assert.equal(up[0]?.value[1], "1");
    assert.ok(Number((await query('sum(mcpvisor_sandbox_resume_duration_seconds_count{server="workspace"})'))[0]?.value[1]) >= 1);
    assert.ok((await query("process_resident_memory_bytes")).length === 1);
    // The alert rules are loaded and evaluated against real series without errors.
    const rules = (await (await fetch(`${api}/rules`)).json()) as {
      data: { groups: { name: string; rules: { name: string; health: string; lastError?: string }[] }[] };
    };
    const group = rules.data.groups.find((g) => g.name === "mcpvisor");
    assert.equal(group?.rules.length, 8);
    const ruleDeadline = Date.now() + 10_000;
    let health = group!.rules.map((r) => r.health);
    while (health.some((h) => h !== "ok") && Date.now() < ruleDeadline) {
      await new Promise((r) => setTimeout(r, 250));
      const again = (await (await fetch(`${api}/rules`)).json()) as typeof rules;
      health = again.data.groups.find((g) => g.name === "mcpvisor")!.rules.map((r) => `${r.health}${r.lastError ? `: ${r.lastError}` : ""}`);
    }
    assert.deepEqual(health, Array(8).fill("ok"));
    await client.close();
  } finally {
    await gateway.close();
  }
});
