import assert from "node:assert/strict";
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { parseTenantsFile } from "../src/auth/tenants-file.js";
import { resolveGatewayConfig } from "../src/config/gateway.js";
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
    "mcpvisor_egress_connections_total",
    "mcpvisor_egress_bytes_total",
  ]) {
    assert.ok(used.has(name), `the dashboard shows ${name}`);
  }
});

test("the alert rules use only exposed metrics", async () => {
  const names = await exposedNames();
  const rules = await readFile(join(DEPLOY, "prometheus", "alerts.yml"), "utf8");
  const exprs = [...rules.matchAll(/expr: (?:\|\n((?:\s{10}.*\n)+)|(.*)\n)/g)].map((m) => (m[1] ?? m[2])!.trim());
  assert.equal(exprs.length, 8);
  for (const expr of exprs) for (const name of metricNames(expr)) assert.ok(names.has(name), `${name} in ${expr}`);
  for (const alert of ["MCPVisorGatewayDown", "MCPVisorToolCallErrorRatio", "MCPVisorToolCallLatencyHigh", "MCPVisorResumeSlow", "MCPVisorSandboxCrashRate", "MCPVisorPoolEmpty", "MCPVisorEgressRefused", "MCPVisorEgressUpstreamCertificate"]) {
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

test("the Kubernetes pod listens beyond loopback, so it is configured with a valid tenants file", async () => {
  const deployment = await readFile(join(DEPLOY, "kubernetes", "deployment.yaml"), "utf8");
  const env = Object.fromEntries([...deployment.matchAll(/- name: (MCPVISOR_\w+)\n\s+value: "?([^"\n]+)"?/g)].map((m) => [m[1], m[2]]));
  assert.equal(env.MCPVISOR_HOST, "0.0.0.0");
  assert.doesNotThrow(() => resolveGatewayConfig({}, { ...env, MCPVISOR_SERVERS_DIR: "/etc/mcpvisor/servers" }), "the gateway would start with this environment");
  assert.match(deployment, /mountPath: \/etc\/mcpvisor\/auth/);
  assert.match(deployment, /secretName: mcpvisor-tenants/);
  const secret = await readFile(join(DEPLOY, "kubernetes", "tenants-secret.yaml"), "utf8");
  const body = /tenants\.json: \|\n((?: {4}.*\n)+)/.exec(secret)![1]!.replace(/^ {4}/gm, "");
  const tenants = parseTenantsFile("tenants-secret.yaml", body);
  assert.ok(tenants.keys.length >= 1 && tenants.keys.every((k) => tenants.tenants[k.tenant]));
  assert.throws(() => resolveGatewayConfig({}, { ...env, MCPVISOR_TENANTS_FILE: "", MCPVISOR_SERVERS_DIR: "/x" }), /refusing to listen on 0\.0\.0\.0/);
});
