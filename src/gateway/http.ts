import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { getRequestListener } from "@hono/node-server";
import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { Logger } from "pino";
import type { Gatekeeper } from "../auth/gatekeeper.js";
import { PROTECTED_RESOURCE_METADATA, resourcePathFor } from "../auth/resource-paths.js";
import type { ModernSessions } from "../router/modern-sessions.js";
import { AGGREGATE, type Router } from "../router/router.js";
import { faceRoute } from "./face-route.js";
import type { AuditLog } from "../telemetry/audit-log.js";
import { TenantCounter, type TenantHolds } from "../tenancy/tenant-counter.js";
import { Edge, type GatewayEnv } from "./admission.js";
import { bodyTooLarge, type Face } from "./face.js";
import { HostPolicy } from "./host-check.js";
import { mountMetrics, type MetricsSource } from "./metrics-route.js";
import type { Readiness } from "./readiness.js";
import { SseFace } from "./sse.js";
import { registerStatusRoutes, type StatusSources } from "./status-routes.js";
import { StreamableHttpFace, type ClusterFaceOptions } from "./streamable-http.js";
import { failureResponse, refused } from "./to-wire.js";
import { WebSocketFace } from "./ws.js";

export interface HttpGatewayOptions {
  host: string;
  port: number;
  maxBodyBytes: number;
  sessionIdleMs: number;
  allowedHosts: string[];
  maxHeaderBytes: number;
  maxJsonDepth: number;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  /** Who may come in: every route but health, the status page's HTML and OAuth metadata asks it. */
  gatekeeper: Gatekeeper;
  audit: AuditLog;
  /** Served at `GET /metrics` when given. */
  metrics?: MetricsSource;
  /** The status page (`GET /`) and `GET /api/status`, `GET /api/traces`, when given. */
  status?: StatusSources;
  /** In a cluster: forwarding to the nodes that run sessions. */
  cluster?: ClusterFaceOptions;
  /** Tenants' open streams (SSE and WebSocket), counted across a cluster; in this process when absent. */
  streams?: TenantHolds;
}

/**
 * The HTTP listener: health endpoints and the MCP faces, on one port. `/servers/<name>/…` is one hosted
 * server; `/sse`, `/messages` and `/ws` are every server aggregated.
 */
export class HttpGateway {
  readonly app = new Hono<GatewayEnv>();
  private server: Server | undefined;
  private readonly streamable: StreamableHttpFace;
  private readonly sse: SseFace;
  private readonly ws: WebSocketFace;

  constructor(
    router: Router,
    modern: ModernSessions,
    private readonly readiness: Readiness,
    private readonly log: Logger,
    private readonly options: HttpGatewayOptions,
  ) {
    const { gatekeeper } = options;
    const edge = new Edge(new HostPolicy(options.host, options.allowedHosts), gatekeeper, options.audit, log);
    const { sessionIdleMs: idleMs, maxJsonDepth } = options;
    this.streamable = new StreamableHttpFace(router, log, { idleMs, maxBodyBytes: options.maxBodyBytes, maxJsonDepth, edge, modern, ...(options.cluster ? { cluster: options.cluster } : {}) });
    // SSE streams and WebSockets of a tenant count together against its open streams.
    const streams = options.streams ?? new TenantCounter("streams", "open streams (SSE and WebSocket)");
    this.sse = new SseFace(router, log, { idleMs, streams, maxJsonDepth, edge });
    this.ws = new WebSocketFace(router, log, { idleMs, maxMessageBytes: options.maxBodyBytes, maxJsonDepth, edge, streams, modern });
    const app = this.app;
    app.get("/healthz", (c) => c.json({ ok: true }));
    app.get("/readyz", (c) => {
      const report = this.readiness.report();
      return c.json(report, report.ready ? 200 : 503);
    });
    // With authentication on, the numbers are for the operator: an admin credential reads them.
    if (gatekeeper.enabled) app.use("/metrics", edge.middleware({ adminOnly: true }));
    mountMetrics(app, options.metrics);
    // Health endpoints stay reachable by probes that address the gateway by any name.
    const hosts = edge.hostCheck();
    app.use("*", (c, next) => (c.req.path === "/healthz" || c.req.path === "/readyz" ? next() : hosts(c, next)));
    // RFC 9728: where an MCP client learns which authorization server issues tokens for a resource.
    if (gatekeeper.enabled) {
      app.get(PROTECTED_RESOURCE_METADATA, (c) => c.json(gatekeeper.protectedResourceMetadata("")));
      app.get(`${PROTECTED_RESOURCE_METADATA}/*`, (c) => {
        const resource = c.req.path.slice(PROTECTED_RESOURCE_METADATA.length);
        if (resourcePathFor(resource) !== resource) {
          return failureResponse(refused(404, ErrorCode.InvalidRequest, `No protected resource at ${resource}; MCP resources are /mcp and /servers/<name>/mcp`));
        }
        return c.json(gatekeeper.protectedResourceMetadata(resource));
      });
    }
    const admit = edge.middleware();
    for (const path of ["/mcp", "/servers/*", "/sse", "/messages", "/api/*"]) app.use(path, admit);
    if (options.status) registerStatusRoutes(app, options.status);
    const limit = bodyLimit({
      maxSize: options.maxBodyBytes,
      onError: () => failureResponse(bodyTooLarge(options.maxBodyBytes)),
    });
    app.use("/servers/*", limit);
    app.use("/messages", limit);
    app.get("/servers/:name/sse", (c) => this.sse.open(c, c.req.param("name"), `/servers/${c.req.param("name")}/messages`));
    app.post("/servers/:name/messages", (c) => this.sse.post(c, c.req.param("name")));
    app.get("/sse", (c) => this.sse.open(c, AGGREGATE, "/messages"));
    app.post("/messages", (c) => this.sse.post(c, AGGREGATE));
    app.onError((err) => {
      this.log.error({ err }, "unhandled error in an HTTP handler");
      return failureResponse(refused(500, ErrorCode.InternalError, "Internal gateway error; the gateway is still running"));
    });
  }

  /** Open client sessions, per face. */
  sessionCounts(): { streamableHttp: number; sse: number; webSocket: number } {
    return { streamableHttp: this.streamable.sessionCount, sse: this.sse.sessionCount, webSocket: this.ws.sessionCount };
  }

  private get faces(): Face[] {
    return [this.streamable, this.sse, this.ws];
  }

  /** Starts listening; resolves with the bound port (useful with port 0). */
  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      const hono = getRequestListener(this.app.fetch, { hostname: this.options.host });
      // Streamable HTTP (/mcp, /servers/<name>/mcp) is served on node:http directly, every other path by hono.
      const { maxHeaderBytes, headersTimeoutMs, requestTimeoutMs } = this.options;
      // Slow clients (slowloris) are cut off; node checks the deadlines every connectionsCheckingInterval.
      const limits = {
        maxHeaderSize: maxHeaderBytes,
        headersTimeout: headersTimeoutMs,
        requestTimeout: Math.max(requestTimeoutMs, headersTimeoutMs),
        connectionsCheckingInterval: Math.min(Math.ceil(headersTimeoutMs / 4), 30_000),
      };
      const server = createServer(limits, (req, res) => {
        const route = faceRoute(req.url, "mcp");
        void (route === undefined ? hono(req, res) : this.streamable.serve(req, res, route));
      });
      server.once("error", reject);
      server.on("upgrade", (req, socket, head) => this.ws.upgrade(req, socket, head, faceRoute(req.url, "ws")));
      server.listen(this.options.port, this.options.host, () => resolve((server.address() as AddressInfo).port));
      this.server = server;
    });
  }

  /** Ends every session of every face (so their VMs), then the listener and its open connections. */
  async close(): Promise<void> {
    await Promise.all(this.faces.map((face) => face.close()));
    const server = this.server;
    if (!server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections(); // idle keep-alive sockets would otherwise hold close() open
    await closed;
  }
}
