import { randomUUID } from "node:crypto";
import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import type { Context } from "hono";
import type { Logger } from "pino";
import type { Router } from "../router/router.js";

interface HttpSession {
  server: string;
  transport: WebStandardStreamableHTTPServerTransport;
  lastSeen: number;
}

/** A JSON-RPC error as an HTTP response, for failures before a session's transport is involved. */
export function jsonRpcHttpError(status: number, code: number, message: string): Response {
  return new Response(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code, message } }), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/**
 * The Streamable HTTP face (MCP 2025-11-25; the SDK's transport does the wire protocol). Each MCP
 * session gets its own transport, handed to the router; sessions idle past `idleMs` are closed so an
 * abandoned client cannot keep a VM alive forever.
 */
export class StreamableHttpFace {
  private readonly sessions = new Map<string, HttpSession>();
  private readonly reaper: NodeJS.Timeout;

  constructor(
    private readonly router: Router,
    private readonly log: Logger,
    private readonly idleMs: number,
  ) {
    this.reaper = setInterval(() => this.reapIdle(), Math.min(idleMs, 30_000));
    this.reaper.unref();
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  async handle(c: Context, server: string): Promise<Response> {
    if (!this.router.hasRoute(server)) {
      return jsonRpcHttpError(404, ErrorCode.InvalidRequest, `No hosted server named '${server}'`);
    }
    const sessionId = c.req.header("mcp-session-id");
    if (sessionId) {
      const session = this.sessions.get(sessionId);
      if (!session || session.server !== server) {
        return jsonRpcHttpError(404, ErrorCode.ConnectionClosed, "Session not found: it ended or expired; start a new one with initialize");
      }
      session.lastSeen = Date.now();
      return session.transport.handleRequest(c.req.raw);
    }
    if (c.req.method !== "POST") {
      return jsonRpcHttpError(400, ErrorCode.InvalidRequest, "Bad request: no Mcp-Session-Id header; send initialize first");
    }
    return this.startSession(c, server);
  }

  private async startSession(c: Context, server: string): Promise<Response> {
    const transport: WebStandardStreamableHTTPServerTransport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => {
        this.sessions.set(id, { server, transport, lastSeen: Date.now() });
        this.log.info({ server, session: id }, "session opened");
      },
      onsessionclosed: (id) => {
        this.sessions.delete(id);
        this.log.info({ server, session: id }, "session closed by client");
      },
    });
    await this.router.connect(server, transport);
    const response = await transport.handleRequest(c.req.raw);
    // Anything but a valid initialize leaves the transport without a session: it has nothing to keep.
    if (!transport.sessionId) void transport.close();
    return response;
  }

  private reapIdle(): void {
    const cutoff = Date.now() - this.idleMs;
    for (const [id, session] of this.sessions) {
      if (session.lastSeen < cutoff) {
        this.sessions.delete(id);
        this.log.info({ server: session.server, session: id }, "session idle too long; closing it");
        void session.transport.close();
      }
    }
  }

  async close(): Promise<void> {
    clearInterval(this.reaper);
    await Promise.allSettled([...this.sessions.values()].map((s) => s.transport.close()));
    this.sessions.clear();
  }
}
