import { randomUUID } from "node:crypto";
import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import type { Context } from "hono";
import type { Logger } from "pino";
import type { Router } from "../router/router.js";
import type { Session } from "../router/session.js";
import { SessionEventStore } from "./event-store.js";
import { SessionTable } from "./session-table.js";

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
  private readonly sessions: SessionTable<WebStandardStreamableHTTPServerTransport>;

  constructor(
    private readonly router: Router,
    log: Logger,
    idleMs: number,
  ) {
    this.sessions = new SessionTable("streamable-http", log, idleMs);
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
      const session = this.sessions.touch(sessionId) ?? (await this.revive(sessionId, server));
      if (!session || session.route !== server) {
        return jsonRpcHttpError(404, ErrorCode.ConnectionClosed, "Session not found: it ended or expired; start a new one with initialize");
      }
      return session.transport.handleRequest(c.req.raw);
    }
    if (c.req.method !== "POST") {
      return jsonRpcHttpError(400, ErrorCode.InvalidRequest, "Bad request: no Mcp-Session-Id header; send initialize first");
    }
    return (await isInitialize(c.req.raw)) ? this.startSession(c, server) : this.stateless(c, server);
  }

  /**
   * A request without a session (a stateless client): it is answered on its own, in a fresh clone that
   * is destroyed right after (`call` isolation), with a JSON response since there is no stream to keep.
   */
  private async stateless(c: Context, server: string): Promise<Response> {
    const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    await this.router.connect(server, transport, "streamable-http", { stateless: true });
    try {
      return await transport.handleRequest(c.req.raw);
    } finally {
      void transport.close();
    }
  }

  /** A transport for one session; DELETE ends the session for good (its saved state goes too). */
  private newTransport(server: string, id: string, ended: () => Promise<void>): WebStandardStreamableHTTPServerTransport {
    const transport: WebStandardStreamableHTTPServerTransport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: () => id,
      eventStore: new SessionEventStore(),
      onsessioninitialized: (sid) => this.sessions.add(sid, server, transport),
      onsessionclosed: async (sid) => {
        this.sessions.delete(sid, "session closed by client");
        await ended();
      },
    });
    return transport;
  }

  /**
   * A session id this process does not know may belong to a session saved before a restart. The SDK's
   * transport only takes requests after an initialize, so the saved session is initialized again here,
   * with what its client declared the first time; the client sees nothing of it.
   */
  private async revive(id: string, server: string) {
    let session: Session | undefined;
    const transport = this.newTransport(server, id, () => session?.end() ?? Promise.resolve());
    const revived = await this.router.revive(id, server, transport);
    if (!revived) return undefined;
    session = revived.session;
    session.onClosed(() => this.sessions.delete(id, "session ended"));
    const init = await transport.handleRequest(
      new Request("http://127.0.0.1/mcp", {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: "mcpvisor-revive",
          method: "initialize",
          params: { protocolVersion: revived.stored.protocolVersion, capabilities: revived.stored.clientCapabilities, clientInfo: { name: "revived", version: "0" } },
        }),
      }),
    );
    await init.body?.cancel();
    return this.sessions.touch(id);
  }

  private async startSession(c: Context, server: string): Promise<Response> {
    let session: Session | undefined;
    const transport = this.newTransport(server, randomUUID(), () => session?.end() ?? Promise.resolve());
    session = await this.router.connect(server, transport, "streamable-http", { persistent: true });
    session.onClosed(() => transport.sessionId && this.sessions.delete(transport.sessionId, "session ended"));
    const response = await transport.handleRequest(c.req.raw);
    // Anything but a valid initialize leaves the transport without a session: it has nothing to keep.
    if (!transport.sessionId) void transport.close();
    return response;
  }

  close(): Promise<void> {
    return this.sessions.close();
  }
}

/** Whether a POST body is (or, in a batch, contains) an initialize request; unreadable bodies are not. */
async function isInitialize(request: Request): Promise<boolean> {
  try {
    const body = (await request.clone().json()) as unknown;
    const messages = Array.isArray(body) ? body : [body];
    return messages.some((m) => typeof m === "object" && m !== null && (m as { method?: unknown }).method === "initialize");
  } catch {
    return true; // let the session path report the parse error the usual way
  }
}
