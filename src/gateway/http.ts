import { serve, type ServerType } from "@hono/node-server";
import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { Logger } from "pino";
import type { Router } from "../router/router.js";
import { HostPolicy } from "./host-check.js";
import type { Readiness } from "./readiness.js";
import { jsonRpcHttpError, StreamableHttpFace } from "./streamable-http.js";

export interface HttpGatewayOptions {
  host: string;
  port: number;
  maxBodyBytes: number;
  sessionIdleMs: number;
  allowedHosts: string[];
}

/** The HTTP listener: health endpoints and the MCP faces, on one port. */
export class HttpGateway {
  readonly app = new Hono();
  private server: ServerType | undefined;
  private readonly streamable: StreamableHttpFace;

  constructor(
    router: Router,
    private readonly readiness: Readiness,
    private readonly log: Logger,
    private readonly options: HttpGatewayOptions,
  ) {
    this.streamable = new StreamableHttpFace(router, log, options.sessionIdleMs);
    const app = this.app;
    app.get("/healthz", (c) => c.json({ ok: true }));
    app.get("/readyz", (c) => {
      const report = this.readiness.report();
      return c.json(report, report.ready ? 200 : 503);
    });
    // Health endpoints stay reachable by probes that address the gateway by any name.
    const hosts = new HostPolicy(options.host, options.allowedHosts).middleware();
    app.use("*", (c, next) => (c.req.path === "/healthz" || c.req.path === "/readyz" ? next() : hosts(c, next)));
    app.use(
      "/servers/*",
      bodyLimit({
        maxSize: options.maxBodyBytes,
        onError: () =>
          jsonRpcHttpError(413, ErrorCode.InvalidRequest, `Request body larger than ${options.maxBodyBytes} bytes`),
      }),
    );
    app.all("/servers/:name/mcp", (c) => this.streamable.handle(c, c.req.param("name")));
    app.onError((err) => {
      this.log.error({ err }, "unhandled error in an HTTP handler");
      return jsonRpcHttpError(500, ErrorCode.InternalError, "Internal gateway error; the gateway is still running");
    });
  }

  /** Starts listening; resolves with the bound port (useful with port 0). */
  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      const server = serve({ fetch: this.app.fetch, hostname: this.options.host, port: this.options.port }, (info) =>
        resolve(info.port),
      );
      server.once("error", reject);
      this.server = server;
    });
  }

  async close(): Promise<void> {
    await this.streamable.close();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
