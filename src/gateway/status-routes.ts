import { randomBytes } from "node:crypto";
import { preparedOf } from "../router/catalog.js";
import { readFileSync } from "node:fs";
import type { Hono } from "hono";
import { mayUseServer, type Principal } from "../auth/principal.js";
import type { ServerManifest } from "../config/manifest.js";
import type { SandboxPool } from "../sandbox/pool.js";
import type { RecentActivity } from "../telemetry/recent-activity.js";
import type { Tracing } from "../telemetry/tracing.js";
import type { GatewayEnv } from "./admission.js";
import type { Readiness } from "./readiness.js";

/** What the status endpoints read; nothing here changes the gateway. */
export interface StatusSources {
  manifests: ServerManifest[];
  pool: SandboxPool;
  readiness: Readiness;
  tracing: Tracing;
  activity: RecentActivity;
  /** Open sessions per face of the HTTP listener, when there is one. */
  sessionCounts?: () => Record<string, number>;
  /** What one tenant holds now. */
  tenantUsage: (tenant: string) => Promise<TenantUsage>;
}

export interface TenantUsage {
  openSessions: number;
  suspendedSessions: number;
  runningSandboxes: number;
}

const startedAt = Date.now();
/** Self-contained (inline CSS and JS, no external assets); `__NONCE__` marks where the CSP nonce goes. */
const STATUS_PAGE_HTML = readFileSync(new URL("./status-page.html", import.meta.url), "utf8");

/**
 * The JSON behind `GET /api/status` (and the status page). An admin sees everything; anyone else sees
 * the servers its tenant may use, its own calls and what its tenant holds, and nothing of other tenants.
 */
export async function statusReport(sources: StatusSources, viewer: Principal) {
  const { pool, readiness, activity } = sources;
  const report = readiness.report();
  const resume = activity.resumeLatency();
  // One entry per server; the servers of a shared sandbox report its pool and sandboxes (`sandbox`).
  const stats = pool.stats().flatMap((s) => s.members.filter((server) => mayUseServer(viewer, server)).map((server) => ({ ...s, unit: s.server, server })));
  const servers = await Promise.all(
    stats.map(async (s) => {
      const manifest = sources.manifests.find((m) => m.name === s.server);
      // A template that is still building would make template() wait; only ready ones are asked.
      const catalog = s.status === "ready" ? await pool.template(s.server).then((t) => preparedOf(t, s.server).catalog, () => undefined) : undefined;
      const sandboxes: Record<string, number> = { prestarted: s.prestarted, warm: s.warm };
      for (const sandbox of s.sandboxes) sandboxes[sandbox.state] = (sandboxes[sandbox.state] ?? 0) + 1;
      return {
        name: s.server,
        ...(s.unit !== s.server ? { sandbox: s.unit } : {}),
        description: manifest?.description ?? "",
        status: s.status,
        ...(s.reason ? { reason: s.reason } : {}),
        tools: (catalog?.tools ?? []).map((t) => ({
          name: String(t.name),
          ...(typeof t.description === "string" ? { description: t.description } : {}),
        })),
        prompts: (catalog?.prompts ?? []).map((p) => String(p.name)),
        resources: catalog?.resources.length ?? 0,
        ...(viewer.admin ? { sandboxes, leased: s.sandboxes } : {}),
        resume: resume[s.unit] ?? { count: 0, p50: 0, p95: 0, max: 0, bySource: {} },
      };
    }),
  );
  return {
    generatedAt: Date.now(),
    uptimeMs: Date.now() - startedAt,
    ready: report.ready,
    reasons: report.reasons,
    viewer: { tenant: viewer.tenant, admin: viewer.admin },
    servers,
    tenant: await sources.tenantUsage(viewer.tenant),
    ...(viewer.admin ? { sessions: { byTransport: activity.openSessions(), ...(sources.sessionCounts ? { byFace: sources.sessionCounts() } : {}) } } : {}),
    calls: activity.recentCalls(undefined, viewer.admin ? undefined : viewer.tenant),
    tracing: { exporting: sources.tracing.exporting },
  };
}

/**
 * `GET /` (the status page), `GET /api/status` and `GET /api/traces[?limit=N][&method=M1,M2][&traceId=ID]`. Registered
 * after the host check, so they are covered by its DNS-rebinding protection like the MCP endpoints.
 */
export function registerStatusRoutes(app: Hono<GatewayEnv>, sources: StatusSources): void {
  app.get("/", (c) => {
    const nonce = randomBytes(16).toString("base64");
    c.header(
      "Content-Security-Policy",
      `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
    );
    c.header("X-Content-Type-Options", "nosniff");
    c.header("Referrer-Policy", "no-referrer");
    c.header("Cache-Control", "no-store");
    return c.html(STATUS_PAGE_HTML.replaceAll("__NONCE__", nonce));
  });
  app.get("/api/status", async (c) => {
    c.header("Cache-Control", "no-store");
    return c.json(await statusReport(sources, c.get("principal")));
  });
  app.get("/api/traces", (c) => {
    c.header("Cache-Control", "no-store");
    // A filter, not a resource: an unknown (or evicted) trace id is an empty list, not a 404.
    const viewer = c.get("principal");
    const tenant = viewer.admin ? undefined : viewer.tenant;
    const traceId = c.req.query("traceId");
    if (traceId) {
      const found = sources.tracing.recent.get(traceId.toLowerCase(), tenant);
      return c.json({ traces: found ? [found] : [] });
    }
    const limit = Number.parseInt(c.req.query("limit") ?? "", 10);
    const methods = c.req.query("method")?.split(",").filter(Boolean);
    return c.json({
      traces: sources.tracing.traces(Number.isFinite(limit) && limit > 0 ? limit : undefined, methods?.length ? new Set(methods) : undefined, tenant),
    });
  });
}
