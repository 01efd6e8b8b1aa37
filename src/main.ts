import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import type { GatewayConfig } from "./config/gateway.js";
import { loadManifests } from "./config/load.js";
import type { ServerManifest } from "./config/manifest.js";
import { sandboxUnits, type SandboxUnit } from "./config/sandbox-unit.js";
import { Gatekeeper } from "./auth/gatekeeper.js";
import { Egress } from "./egress/egress.js";
import { OAuthVerifier } from "./auth/oauth.js";
import { loadTenantsFile } from "./auth/tenants-file.js";
import { watchTenantsFile } from "./auth/tenants-watcher.js";
import { isLoopback } from "./config/gateway.js";
import { HttpGateway } from "./gateway/http.js";
import { AuditLog } from "./telemetry/audit-log.js";
import { flushTelemetry } from "./telemetry/events.js";
import { Readiness } from "./gateway/readiness.js";
import { mcpPreparation } from "./router/catalog.js";
import { ModernSessions } from "./router/modern-sessions.js";
import { Router } from "./router/router.js";
import { SessionStore } from "./router/session-store.js";
import type { SessionRecords } from "./router/session-records.js";
import { Cluster } from "./cluster/cluster.js";
import type { VmSpec } from "./sandbox/driver.js";
import { prepareGuests } from "./sandbox/guest-images.js";
import { SandboxPool } from "./sandbox/pool.js";
import { QemuDriver } from "./sandbox/qemu/qemu-driver.js";
import { TemplateStore } from "./sandbox/template.js";
import { RecentActivity } from "./telemetry/recent-activity.js";
import { Tracing } from "./telemetry/tracing.js";
import { registerManifestSecrets } from "./telemetry/log.js";
import { Metrics } from "./telemetry/metrics.js";
import { subscribeRequestLog } from "./telemetry/request-log.js";

export const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));

export interface Runtime {
  manifests: ServerManifest[];
  /** What each guest runs: a server, or the servers sharing a sandbox. */
  units: SandboxUnit[];
  pool: SandboxPool;
  router: Router;
  /** Where 2026-07-28 requests are served, on every face: one session per principal and route. */
  modern: ModernSessions;
  readiness: Readiness;
  /** Request traces (in memory, and OTLP when configured) and recent activity, for the status page. */
  tracing: Tracing;
  activity: RecentActivity;
  /** Resolves when every server's template exists and its pool was filled once (or failed). */
  settled: Promise<void>;
  /** This node's part in a cluster (`clusterRedis`); undefined for a gateway on its own. */
  cluster: Cluster | undefined;
  close(): Promise<void>;
}

export interface RuntimeOptions {
  /** Overrides every manifest's pool sizes (the CLI's one-off commands need no standing pool). */
  pool?: ServerManifest["pool"];
  /** Ports of the gateway's own, which no sandbox may reach; the HTTP face adds the one it binds. */
  gatewayPorts?: Set<number>;
}

/**
 * The composition root below the faces: config -> driver -> template store -> pool -> router. Image
 * builds and template boots run in the background; callers see progress through `readiness`.
 */
export async function createRuntime(
  config: GatewayConfig,
  log: Logger,
  progress: (line: string) => void,
  options: RuntimeOptions = {},
): Promise<Runtime> {
  const loaded = await loadManifests(config.serversDir, config.servers);
  const manifests = options.pool ? loaded.map((m) => ({ ...m, pool: options.pool! })) : loaded;
  registerManifestSecrets(manifests);
  const units = sandboxUnits(manifests, config.serversDir);
  const cluster = config.clusterRedis ? await Cluster.join(config, log) : undefined;
  // What shapes guest memory (images, the egress CA, templates) and suspended state is shared by a
  // cluster's nodes: a RAM diff saved on one loads on another only over the very same template bytes.
  const sharedDir = cluster?.storeDir ?? config.cacheDir;
  const egress = await Egress.create({
    manifests,
    serversDir: config.serversDir,
    env: process.env,
    cacheDir: sharedDir,
    resolver: config.egressResolver,
    ...(config.egressUpstreamCa ? { upstreamCaFile: config.egressUpstreamCa } : {}),
    maxConnections: config.egressMaxConnections,
    gatewayPorts: options.gatewayPorts ?? new Set([config.port]),
    log,
  });
  const stopRequestLog = subscribeRequestLog(log);
  const driver = new QemuDriver({ runDir: config.runDir, log, egress });
  const pool = new SandboxPool({
    driver,
    templates: new TemplateStore(driver, sharedDir, log, mcpPreparation, cluster?.builds),
    preparation: mcpPreparation,
    log,
    suspendDir: join(sharedDir, "suspended"),
    limits: { maxVms: config.maxVms, maxQueue: config.vmQueue, queueTimeoutMs: config.vmQueueTimeoutMs },
    ...(cluster ? { tenantSandboxes: cluster.runningSandboxes } : {}),
    runSlots: config.guestRunSlots,
  });
  let sessionStore: SessionRecords;
  if (cluster) {
    sessionStore = cluster.directory;
  } else {
    const store = new SessionStore(join(config.cacheDir, "sessions"));
    await store.index();
    sessionStore = store;
  }
  const router = new Router(pool, log, sessionStore, cluster?.openSessions);
  // A node that lost its lease drops its sessions before another node may take them over.
  cluster?.lease.onLost(() => router.fence());
  const modern = new ModernSessions(router, log, config.sessionIdleMs);
  // Saved sessions nobody came back to are deleted after the retention time, checked hourly.
  const expire = () =>
    void router.expireSaved(config.sessionRetentionMs).then((n) => n && log.info({ expired: n }, "expired saved sessions"));
  expire();
  const expiry = setInterval(expire, 3_600_000);
  expiry.unref();
  const readiness = new Readiness();
  const tracing = new Tracing();
  const activity = new RecentActivity();
  readiness.setPhase("building guest images (first start can take a few minutes)");

  const prepare = () =>
    prepareGuests(units, {
      build: { cacheDir: sharedDir, repoRoot: REPO_ROOT, progress },
      driver,
      accel: config.accel,
      runDir: config.runDir,
      log,
      kvmCpu: config.kvmCpu,
    });
  // In a cluster one node builds the shared images while the others wait, then find them built.
  const plan = cluster ? cluster.builds.exclusive("guest-images", prepare) : prepare();
  plan.catch((err: Error) => {
    readiness.setFailed(`guest image build failed: ${err.message}`);
    log.error({ err }, "guest image build failed");
  });
  for (const unit of units) {
    const spec: Promise<VmSpec> = plan.then((p) => p.specs.get(unit.name)!);
    pool.add(unit, spec, progress);
  }
  readiness.watchPools(() => pool.stats());
  if (cluster) readiness.watchClusterLease(() => cluster.lease.held());
  const settled = Promise.allSettled(manifests.map((m) => pool.template(m.name))).then(() => waitForPools(pool));

  return {
    manifests,
    units,
    pool,
    router,
    modern,
    readiness,
    tracing,
    activity,
    settled,
    cluster,
    async close() {
      clearInterval(expiry);
      await modern.close();
      await router.close();
      await pool.close();
      await cluster?.close();
      // What the last calls published is recorded before anything stops listening.
      flushTelemetry();
      stopRequestLog();
      activity.close();
      await tracing.close();
    },
  };
}

async function waitForPools(pool: SandboxPool): Promise<void> {
  while (pool.stats().some((s) => s.status === "building")) await new Promise((r) => setTimeout(r, 50));
}

export interface Gateway extends Runtime {
  http: HttpGateway;
  metrics: Metrics;
  port: number;
}

export async function startGateway(
  config: GatewayConfig,
  log: Logger,
  progress: (line: string) => void,
  options: RuntimeOptions = {},
): Promise<Gateway> {
  // Credentials are checked before anything is built: a broken tenants file stops the start at once.
  const tenants = config.tenantsFile ? await loadTenantsFile(config.tenantsFile) : undefined;
  const gatewayPorts = new Set([config.port]);
  const runtime = await createRuntime(config, log, progress, { ...options, gatewayPorts });
  const { manifests, pool, readiness, tracing, activity, router } = runtime;
  let port = 0;
  const gatekeeper = new Gatekeeper({
    tenants,
    ...(runtime.cluster ? { rate: runtime.cluster.rate } : {}),
    oauth: config.oauthIssuer
      ? new OAuthVerifier({
          issuer: config.oauthIssuer,
          jwksUrl: config.oauthJwksUrl,
          tenantClaim: config.oauthTenantClaim,
          requiredScopes: config.oauthScopes,
          adminScope: config.oauthAdminScope,
        })
      : undefined,
    publicUrl: () => config.publicUrl ?? `http://${config.host.includes(":") ? `[${config.host}]` : config.host}:${port}`,
  });
  const stopWatchingTenants = config.tenantsFile ? watchTenantsFile(config.tenantsFile, gatekeeper, log) : () => undefined;
  if (!gatekeeper.enabled && !isLoopback(config.host)) {
    log.warn({ host: config.host }, "INSECURE: listening beyond loopback with no authentication (--insecure-no-auth); anyone who can reach this port can run code in the sandboxes");
  }
  const audit = new AuditLog(config.auditLog ?? join(config.cacheDir, "audit.log"));
  const status = {
    manifests,
    pool,
    readiness,
    tracing,
    activity,
    sessionCounts: (): Record<string, number> => http.sessionCounts(),
    tenantUsage: (tenant: string) => router.tenantUsage(tenant),
  };
  const metrics = new Metrics({
    poolStats: () => pool.stats(),
    runGate: () => pool.runGateStats(),
    poolTargets: () => runtime.units.map((u) => ({ server: u.name, ...u.pool })),
    ...(runtime.cluster ? { clusterLeaseHeld: () => runtime.cluster!.lease.held() } : {}),
  });
  const cluster = runtime.cluster;
  const clusterFace = cluster ? { peers: cluster.peers, held: () => cluster.lease.held(), leaseMs: cluster.leaseMs } : undefined;
  const http = new HttpGateway(router, runtime.modern, readiness, log, {
    ...config,
    status,
    metrics,
    gatekeeper,
    audit,
    ...(cluster && clusterFace ? { cluster: clusterFace, streams: cluster.openStreams } : {}),
  });
  port = await http.listen();
  gatewayPorts.add(port);
  log.info({ host: config.host, port, servers: runtime.manifests.map((m) => m.name) }, "gateway listening");
  return {
    ...runtime,
    http,
    metrics,
    port,
    async close() {
      stopWatchingTenants();
      await http.close();
      await runtime.close();
      metrics.close();
      await audit.close();
    },
  };
}
