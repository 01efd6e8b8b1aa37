import type { Hono } from "hono";

/** What `GET /metrics` serves: anything that renders Prometheus text (src/telemetry/metrics.ts). */
export interface MetricsSource {
  text(): Promise<string>;
  readonly contentType: string;
}

/**
 * `GET /metrics` in the Prometheus text format. Mounted before the Host/Origin check, like the health
 * endpoints: a scraper addresses the gateway by whatever name its service discovery gives, and the
 * numbers carry no session data (only server and tool names, which `tools/list` shows anyway).
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function mountMetrics(app: Hono<any>, metrics: MetricsSource | undefined): void {
  if (!metrics) return;
  app.get("/metrics", async (c) => c.body(await metrics.text(), 200, { "content-type": metrics.contentType }));
}
