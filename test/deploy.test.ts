import assert from "node:assert/strict";
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { ServerManifestSchema } from "../src/config/manifest.js";
import { REPO_ROOT } from "../src/main.js";
import { Metrics } from "../src/telemetry/metrics.js";

const DEPLOY = join(REPO_ROOT, "deploy");

/** Every series name the gateway exposes (histograms with their _bucket, _sum and _count), plus `up`. */
async function exposedNames(): Promise<Set<string>> {
  const metrics = new Metrics();
  try {
    const names = new Set(["up"]);
    for (const m of await metrics.registry.getMetricsAsJSON()) {
      names.add(m.name);
      if (String(m.type) === "histogram") for (const suffix of ["_bucket", "_sum", "_count"]) names.add(m.name + suffix);
    }
    return names;
  } finally {
    metrics.close();
  }
}

/** Metric names in a PromQL expression (the gateway's own, Node's and `up`), outside label matchers and strings. */
function metricNames(expr: string): string[] {
  const bare = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/\{[^}]*\}/g, "{}");
  return [...bare.matchAll(/\b(mcpvisor_\w+|process_\w+|nodejs_\w+|up)\b/g)].map((m) => m[1]!);
}

test("the Grafana dashboard queries only metrics the gateway exposes, and covers the issue's metrics", async () => {
  const names = await exposedNames();
  const dashboard = JSON.parse(await readFile(join(DEPLOY, "grafana", "dashboard.json"), "utf8")) as {
    uid: string;
    panels: { type: string; title: string; targets?: { expr: string }[] }[];
  };
  assert.equal(dashboard.uid, "mcpvisor");
  const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));
  assert.ok(exprs.length >= 20);
  const used = new Set<string>();
  for (const { panel, expr } of exprs) {
    const found = metricNames(expr);
    assert.ok(found.length > 0, `${panel}: ${expr}`);
    for (const name of found) {
      assert.ok(names.has(name), `${panel}: ${name} is not exposed by the gateway`);
      used.add(name.replace(/_(bucket|sum|count)$/, ""));
    }
  }
  for (const name of [
    "mcpvisor_tool_calls_total",
    "mcpvisor_tool_call_duration_seconds",
    "mcpvisor_sandbox_resume_duration_seconds",
    "mcpvisor_sandbox_cold_boot_duration_seconds",
    "mcpvisor_sandbox_suspend_duration_seconds",
    "mcpvisor_sandboxes",
    "mcpvisor_mcp_requests_total",
    "mcpvisor_sessions",
    "process_resident_memory_bytes",
  ]) {
    assert.ok(used.has(name), `the dashboard shows ${name}`);
  }
});

test("the alert rules use only exposed metrics", async () => {
  const names = await exposedNames();
  const rules = await readFile(join(DEPLOY, "prometheus", "alerts.yml"), "utf8");
  const exprs = [...rules.matchAll(/expr: (?:\|\n((?:\s{10}.*\n)+)|(.*)\n)/g)].map((m) => (m[1] ?? m[2])!.trim());
  assert.equal(exprs.length, 6);
  for (const expr of exprs) for (const name of metricNames(expr)) assert.ok(names.has(name), `${name} in ${expr}`);
  for (const alert of ["MCPVisorGatewayDown", "MCPVisorToolCallErrorRatio", "MCPVisorToolCallLatencyHigh", "MCPVisorResumeSlow", "MCPVisorSandboxCrashRate", "MCPVisorPoolEmpty"]) {
    assert.match(rules, new RegExp(`alert: ${alert}\\n`));
  }
});

test("Grafana provisioning points at the dashboard and a Prometheus datasource", async () => {
  const dir = join(DEPLOY, "grafana", "provisioning");
  assert.deepEqual(await readdir(join(dir, "dashboards")), ["mcpvisor.yml"]);
  assert.match(await readFile(join(dir, "dashboards", "mcpvisor.yml"), "utf8"), /type: file[\s\S]*path: \//);
  assert.match(await readFile(join(dir, "datasources", "mcpvisor.yml"), "utf8"), /type: prometheus/);
});

test("the Kubernetes ConfigMap holds valid server manifests, the same as servers/", async () => {
  const text = await readFile(join(DEPLOY, "kubernetes", "configmap.yaml"), "utf8");
  const blocks = [...text.matchAll(/^ {2}([\w-]+)\.json: \|\n((?: {4}.*\n)+)/gm)];
  assert.ok(blocks.length >= 1);
  for (const [, name, body] of blocks) {
    const manifest = ServerManifestSchema.parse(JSON.parse(body!.replace(/^ {4}/gm, "")));
    assert.equal(manifest.name, name);
    const repo = ServerManifestSchema.parse(JSON.parse(await readFile(join(REPO_ROOT, "servers", `${name}.json`), "utf8")));
    assert.deepEqual(manifest, repo, `${name}.json in the ConfigMap matches servers/${name}.json`);
  }
  const deployment = await readFile(join(DEPLOY, "kubernetes", "deployment.yaml"), "utf8");
  assert.match(deployment, /name: mcpvisor-servers/);
  assert.match(deployment, /kvm/);
});
