import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { ServerPoolStats } from "../sandbox/pool.js";
import {
  events,
  flushTelemetry,
  type Outcome,
  type ClusterRecord,
  type EgressRecord,
  type RequestRecord,
  type SandboxCrashRecord,
  type SandboxResumeRecord,
  type SandboxSuspendRecord,
  type SandboxTransitionRecord,
  type SessionRecord,
  type TemplateBuiltRecord,
} from "./events.js";

/**
 * Prometheus metrics over the telemetry channels (src/telemetry/events.ts). Each instance owns its own
 * registry, so several gateways in one process (tests) keep separate numbers. Names and labels are a
 * contract with deploy/prometheus/alerts.yml and deploy/grafana/dashboard.json: change them together.
 *
 * Every label value is bounded: servers come from manifests, tools only from template catalogs (the
 * router sets `record.tool` only for a tool that exists), methods from the MCP method list (anything
 * else is `other`), transports, states and outcomes from the code.
 */

/** Tool calls: 1 ms to 60 s. */
export const CALL_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60];
/** Resumes and suspends: milliseconds, with a tail for software emulation. */
export const RESUME_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10];
export const SUSPEND_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Cold boots (boot + initialize of a template): seconds to minutes under TCG. */
export const COLD_BOOT_BUCKETS = [0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600];

/** The methods a client may send (MCP 2024-11-05 to 2025-11-25); any other is counted as `other`. */
const KNOWN_METHODS = new Set([
  "initialize",
  "ping",
  "tools/list",
  "tools/call",
  "resources/list",
  "resources/templates/list",
  "resources/read",
  "resources/subscribe",
  "resources/unsubscribe",
  "prompts/list",
  "prompts/get",
  "completion/complete",
  "logging/setLevel",
  "tasks/get",
  "tasks/list",
  "tasks/result",
  "tasks/cancel",
]);
const OUTCOMES = new Set<Outcome>(["ok", "tool_error", "error", "timeout"]);
const SANDBOX_STATES = ["pooled", "active", "idle", "suspended"] as const;
const LIFECYCLE_STATES = new Set(["pooled", "resuming", "active", "idle", "suspending", "suspended", "destroyed"]);
const ACQUIRE_SOURCES = new Set(["warm-pool", "prestarted", "cold-vmm", "suspended"]);

export function methodLabel(method: string): string {
  return KNOWN_METHODS.has(method) ? method : "other";
}

function outcomeLabel(outcome: Outcome | undefined): Outcome {
  return outcome && OUTCOMES.has(outcome) ? outcome : "error";
}

function bounded(value: string, allowed: Set<string>): string {
  return allowed.has(value) ? value : "other";
}

export interface PoolTarget {
  server: string;
  prestarted: number;
  warm: number;
}

export interface MetricsOptions {
  /** The pools as they are now; read at each scrape. */
  poolStats?: () => ServerPoolStats[];
  /** The run gate as it is now (guests running a request in a slot, sandboxes waiting for one). */
  runGate?: () => { running: number; waiting: number };
  /** Each server's configured pool sizes (the manifests' `pool`). */
  poolTargets?: () => PoolTarget[];
  /** In a cluster: whether this node holds its lease now; read at each scrape. */
  clusterLeaseHeld?: () => boolean;
  /** Node.js process metrics (prom-client's defaults); default true. */
  processMetrics?: boolean;
}

type Handler = (message: unknown, name: string | symbol) => void;

export class Metrics {
  readonly registry = new Registry();
  private readonly subscriptions: [string | symbol, Handler][] = [];
  private closed = false;

  readonly toolCalls: Counter<"server" | "tool" | "outcome">;
  readonly toolCallDuration: Histogram<"server" | "tool">;
  readonly requests: Counter<"transport" | "method" | "status">;
  readonly requestDuration: Histogram<"transport" | "method">;
  readonly sessions: Gauge<"transport">;
  readonly resumeDuration: Histogram<"server" | "from">;
  readonly coldBootDuration: Histogram<"server">;
  readonly snapshotDuration: Histogram<"server">;
  readonly suspendDuration: Histogram<"server">;
  readonly suspendBytes: Histogram<"server">;
  readonly acquireDuration: Histogram<"server" | "source">;
  readonly crashes: Counter<"server">;
  readonly transitions: Counter<"server" | "from" | "to">;
  readonly egressConnections: Counter<"server" | "destination" | "outcome">;
  readonly egressBytes: Counter<"server" | "direction">;
  readonly egressDnsRefused: Counter<"server">;

  constructor(options: MetricsOptions = {}) {
    const registers = [this.registry];
    if (options.processMetrics !== false) collectDefaultMetrics({ register: this.registry });

    this.toolCalls = new Counter({
      name: "mcpvisor_tool_calls_total",
      help: "Tool calls answered, by outcome: ok, tool_error (a result with isError), error (a JSON-RPC error), timeout.",
      labelNames: ["server", "tool", "outcome"],
      registers,
    });
    this.toolCallDuration = new Histogram({
      name: "mcpvisor_tool_call_duration_seconds",
      help: "Tool call latency as the gateway sees it, from the client's request to the answer sent.",
      labelNames: ["server", "tool"],
      buckets: CALL_BUCKETS,
      registers,
    });
    this.requests = new Counter({
      name: "mcpvisor_mcp_requests_total",
      help: "Client JSON-RPC requests answered, by transport, method (unknown ones are 'other') and status (the outcome).",
      labelNames: ["transport", "method", "status"],
      registers,
    });
    this.requestDuration = new Histogram({
      name: "mcpvisor_mcp_request_duration_seconds",
      help: "Client JSON-RPC request latency, from arrival to answer.",
      labelNames: ["transport", "method"],
      buckets: CALL_BUCKETS,
      registers,
    });
    this.sessions = new Gauge({
      name: "mcpvisor_sessions",
      help: "Open client sessions, by transport.",
      labelNames: ["transport"],
      registers,
    });
    this.resumeDuration = new Histogram({
      name: "mcpvisor_sandbox_resume_duration_seconds",
      help: "Sandbox resumes: 'snapshot' is a fresh clone of the template, 'suspended' a session's sandbox brought back.",
      labelNames: ["server", "from"],
      buckets: RESUME_BUCKETS,
      registers,
    });
    this.coldBootDuration = new Histogram({
      name: "mcpvisor_sandbox_cold_boot_duration_seconds",
      help: "Template cold boots: QEMU start to the server's initialize answered.",
      labelNames: ["server"],
      buckets: COLD_BOOT_BUCKETS,
      registers,
    });
    this.snapshotDuration = new Histogram({
      name: "mcpvisor_template_snapshot_duration_seconds",
      help: "Writing a template's snapshot after its cold boot and warm-up.",
      labelNames: ["server"],
      buckets: SUSPEND_BUCKETS,
      registers,
    });
    this.suspendDuration = new Histogram({
      name: "mcpvisor_sandbox_suspend_duration_seconds",
      help: "Suspending an idle session's sandbox to disk.",
      labelNames: ["server"],
      buckets: SUSPEND_BUCKETS,
      registers,
    });
    this.suspendBytes = new Histogram({
      name: "mcpvisor_sandbox_suspend_bytes",
      help: "Size of a suspended sandbox's saved state.",
      labelNames: ["server"],
      buckets: [2 ** 16, 2 ** 18, 2 ** 20, 2 ** 22, 2 ** 24, 2 ** 26, 2 ** 28, 2 ** 30],
      registers,
    });
    this.acquireDuration = new Histogram({
      name: "mcpvisor_sandbox_acquire_duration_seconds",
      help: "Time a request waited for its session's first sandbox, by where it came from (warm-pool, prestarted, cold-vmm).",
      labelNames: ["server", "source"],
      buckets: RESUME_BUCKETS,
      registers,
    });
    this.crashes = new Counter({
      name: "mcpvisor_sandbox_crashes_total",
      help: "Sandboxes that died unasked (QEMU or the hosted server exited, guest panic).",
      labelNames: ["server"],
      registers,
    });
    this.transitions = new Counter({
      name: "mcpvisor_sandbox_transitions_total",
      help: "Sandbox lifecycle transitions (docs/design/lifecycle.md).",
      labelNames: ["server", "from", "to"],
      registers,
    });

    this.egressConnections = new Counter({
      name: "mcpvisor_egress_connections_total",
      help: "Connections (and HTTP requests through the egress proxy or a credentialed destination) sandboxes opened, by the allow entry that covered them (`unlisted` when none) and outcome: ok, refused, failed, tls_failed.",
      labelNames: ["server", "destination", "outcome"],
      registers,
    });
    this.egressBytes = new Counter({
      name: "mcpvisor_egress_bytes_total",
      help: "Bytes sandboxes moved through their egress: `out` from the guest, `in` to it.",
      labelNames: ["server", "direction"],
      registers,
    });
    const cluster = new Counter({
      name: "mcpvisor_cluster_events_total",
      help: "Sessions not open in this process asked for by id (kind claim: revived here from a saved record, running on another node, gone); in cluster mode also requests forwarded to the node running their session (kind forward: ok, unreachable) and leases lost (kind fenced).",
      labelNames: ["kind", "outcome"],
      registers,
    });
    this.on(events.cluster.name, (message) => {
      const r = message as ClusterRecord;
      cluster.inc({ kind: r.kind, outcome: r.kind === "fenced" ? "fenced" : r.outcome });
    });
    const leaseHeld = options.clusterLeaseHeld;
    new Gauge({
      name: "mcpvisor_cluster_lease_held",
      help: "Cluster mode: 1 while this node holds its lease (it may serve sessions), 0 while it is fenced and joining again.",
      registers,
      collect() {
        this.reset();
        if (leaseHeld) this.set(leaseHeld() ? 1 : 0);
      },
    });
    this.egressDnsRefused = new Counter({
      name: "mcpvisor_egress_dns_refused_total",
      help: "Names a sandbox asked for that its policy does not grant (answered NXDOMAIN).",
      labelNames: ["server"],
      registers,
    });

    const poolStats = options.poolStats;
    const poolTargets = options.poolTargets;
    new Gauge({
      name: "mcpvisor_sandboxes",
      help: "Sandboxes by state: pooled (a QEMU waiting for a snapshot), idle (a warm clone, or a session's between calls), active (a call in flight), suspended.",
      labelNames: ["server", "state"],
      registers,
      collect() {
        this.reset();
        for (const stats of poolStats?.() ?? []) {
          for (const [state, n] of Object.entries(sandboxCounts(stats))) this.set({ server: stats.server, state }, n);
        }
      },
    });
    new Gauge({
      name: "mcpvisor_sandboxes_frozen",
      help: "Running sandboxes whose vCPUs are stopped while idle (they cost no host CPU), warm clones in the pool included.",
      labelNames: ["server"],
      registers,
      collect() {
        this.reset();
        for (const stats of poolStats?.() ?? []) this.set({ server: stats.server }, stats.warmFrozen + stats.sandboxes.filter((s) => s.frozen).length);
      },
    });
    new Gauge({
      name: "mcpvisor_pool_available",
      help: "Sandboxes ready to hand to a new session, by kind: prestarted (QEMU started, state not loaded) or warm (resumed and warmed).",
      labelNames: ["server", "kind"],
      registers,
      collect() {
        this.reset();
        for (const stats of poolStats?.() ?? []) {
          this.set({ server: stats.server, kind: "prestarted" }, stats.prestarted);
          this.set({ server: stats.server, kind: "warm" }, stats.warm);
        }
      },
    });
    new Gauge({
      name: "mcpvisor_pool_target",
      help: "Pool size the refills aim for, per server and kind: prestarted (the manifest's) and warm (the manifest's, grown while sessions find the pool empty).",
      labelNames: ["server", "kind"],
      registers,
      collect() {
        this.reset();
        const stats = new Map((poolStats?.() ?? []).map((s) => [s.server, s]));
        for (const target of poolTargets?.() ?? []) {
          this.set({ server: target.server, kind: "prestarted" }, target.prestarted);
          this.set({ server: target.server, kind: "warm" }, stats.get(target.server)?.warmTarget ?? target.warm);
        }
      },
    });
    const runGate = options.runGate;
    new Gauge({
      name: "mcpvisor_guest_run_slots",
      help: "The run gate (--guest-run-slots): guests running a request in a slot (`running`), and sandboxes whose request waits for one (`waiting`).",
      labelNames: ["state"],
      registers,
      collect() {
        const stats = runGate?.() ?? { running: 0, waiting: 0 };
        this.set({ state: "running" }, stats.running);
        this.set({ state: "waiting" }, stats.waiting);
      },
    });
    new Gauge({
      name: "mcpvisor_server_ready",
      help: "1 when the server's template is built and its pool serving, else 0 (building or failed).",
      labelNames: ["server"],
      registers,
      collect() {
        this.reset();
        // Per server: the servers of a shared sandbox are ready when it is.
        for (const stats of poolStats?.() ?? []) for (const server of stats.members) this.set({ server }, stats.status === "ready" ? 1 : 0);
      },
    });

    this.on(events.requestEnd.name, (message) => this.onRequestEnd(message as RequestRecord));
    this.on(events.sandboxResume.name, (message) => {
      const r = message as SandboxResumeRecord;
      this.resumeDuration.observe({ server: r.server, from: r.from === "suspended" ? "suspended" : "snapshot" }, r.durationMs / 1000);
    });
    this.on(events.sandboxSuspend.name, (message) => {
      const r = message as SandboxSuspendRecord;
      this.suspendDuration.observe({ server: r.server }, r.durationMs / 1000);
      if (Number.isFinite(r.bytes)) this.suspendBytes.observe({ server: r.server }, r.bytes);
    });
    this.on(events.sandboxCrash.name, (message) => this.crashes.inc({ server: (message as SandboxCrashRecord).server }));
    this.on(events.sandboxTransition.name, (message) => {
      const r = message as SandboxTransitionRecord;
      this.transitions.inc({ server: r.server, from: bounded(r.from, LIFECYCLE_STATES), to: bounded(r.to, LIFECYCLE_STATES) });
    });
    this.on(events.templateBuilt.name, (message) => {
      const r = message as TemplateBuiltRecord;
      this.coldBootDuration.observe({ server: r.server }, r.coldBootMs / 1000);
      this.snapshotDuration.observe({ server: r.server }, r.snapshotMs / 1000);
    });
    this.on(events.egress.name, (message) => {
      const r = message as EgressRecord;
      if (r.kind === "dns") return void this.egressDnsRefused.inc({ server: r.server });
      this.egressConnections.inc({ server: r.server, destination: r.destination, outcome: r.outcome });
      if (r.bytesOut) this.egressBytes.inc({ server: r.server, direction: "out" }, r.bytesOut);
      if (r.bytesIn) this.egressBytes.inc({ server: r.server, direction: "in" }, r.bytesIn);
    });
    this.on(events.sessionOpened.name, (message) => this.sessions.inc({ transport: (message as SessionRecord).transport }));
    this.on(events.sessionClosed.name, (message) => this.sessions.dec({ transport: (message as SessionRecord).transport }));
  }

  private on(name: string | symbol, handler: Handler): void {
    subscribe(name, handler);
    this.subscriptions.push([name, handler]);
  }

  private onRequestEnd(record: RequestRecord): void {
    const seconds = Math.max(0, (record.endedAt ?? record.startedAt) - record.startedAt) / 1000;
    const method = methodLabel(record.method);
    const outcome = outcomeLabel(record.outcome);
    this.requests.inc({ transport: record.transport, method, status: outcome });
    this.requestDuration.observe({ transport: record.transport, method }, seconds);
    if (record.server && record.acquire) {
      this.acquireDuration.observe(
        { server: record.server, source: bounded(record.acquire.source, ACQUIRE_SOURCES) },
        Math.max(0, record.acquire.end - record.acquire.start) / 1000,
      );
    }
    // `tool` is set only for a tool in the server's catalog: an unknown name from a client never becomes a label.
    if (record.method === "tools/call" && record.server && record.tool) {
      this.toolCalls.inc({ server: record.server, tool: record.tool, outcome });
      this.toolCallDuration.observe({ server: record.server, tool: record.tool }, seconds);
    }
  }

  /** The Prometheus text exposition of every metric. */
  text(): Promise<string> {
    flushTelemetry();
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Stops listening to the channels (the registry keeps its last values). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [name, handler] of this.subscriptions) unsubscribe(name, handler);
    this.subscriptions.length = 0;
  }
}

/**
 * Pool stats to the four sandbox states: prestarted QEMUs are `pooled`, warm clones `idle`, leased ones
 * by their own state; `suspended` is the pool's count of leased sandboxes saved to disk.
 */
export function sandboxCounts(stats: ServerPoolStats): Record<(typeof SANDBOX_STATES)[number], number> {
  const counts = { pooled: stats.prestarted, active: 0, idle: stats.warm, suspended: stats.suspended };
  for (const sandbox of stats.sandboxes) {
    if (sandbox.state === "active" || sandbox.state === "idle") counts[sandbox.state]++;
  }
  return counts;
}
