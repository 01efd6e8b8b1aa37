import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import type { Principal } from "../auth/principal.js";
import { MODERN_SESSION_PREFIX, type ModernSessions } from "../router/modern-sessions.js";
import type { JSONRPCNotification, JSONRPCRequest } from "../router/messages.js";
import type { Route } from "../router/router.js";
import type { Session } from "../router/session.js";
import { edgeRequest } from "./admission.js";
import { searchesTools } from "./face-route.js";
import { SessionEventStore } from "./event-store.js";
import { bodyTooLarge, noSuchServer, SessionFace, type FaceOptions } from "./face.js";
import { jsonDeeperThan } from "./json-depth.js";
import { serveModern, writeModernRefusal } from "./modern-http.js";
import { eraOf, mayBeModern } from "./protocol-era.js";
import type { FaceSession } from "./session-table.js";
import { SESSION_NOT_FOUND, StreamableHttpServerTransport } from "./streamable-http-transport.js";
import { isRefusal, refused, writeFailure } from "./to-wire.js";
import { ClusterUnavailableError } from "../cluster/errors.js";
import type { PeerForwarding } from "../cluster/peer-forwarding.js";

export interface StreamableHttpFaceOptions extends FaceOptions {
  maxBodyBytes: number;
  /** Where 2026-07-28 requests (no session, an `_meta` envelope) are served: docs/design/protocol-eras.md. */
  modern: ModernSessions;
  /** In a cluster: requests for sessions running on other nodes go there (docs/design/cluster.md). */
  cluster?: ClusterFaceOptions;
}

export interface ClusterFaceOptions {
  peers: PeerForwarding;
  /** Whether this node holds its lease: a node that lost it serves no session until it re-joined. */
  held(): boolean;
  leaseMs: number;
}

/** A session the request names: open here, or running on another node. */
type Found = FaceSession<StreamableHttpServerTransport> | { elsewhere: Owner };
type Owner = { node: string; url: string };

/**
 * The Streamable HTTP face (MCP 2025-11-25). It carries every tools/call of most clients, so it is served
 * straight on node:http (`serve`) rather than through hono: see StreamableHttpServerTransport. Each MCP
 * session gets its own transport, handed to the router; sessions idle past `idleMs` are closed so an
 * abandoned client cannot keep a VM alive forever.
 */
export class StreamableHttpFace extends SessionFace<StreamableHttpServerTransport, StreamableHttpFaceOptions> {
  readonly name = "streamable-http";

  /** Answers one HTTP request to `/mcp` or `/servers/<route>/mcp`. */
  async serve(req: IncomingMessage, res: ServerResponse, route: Route): Promise<void> {
    try {
      await this.handle(req, res, route);
    } catch (err) {
      if (req.readableAborted) return void this.log.debug({ err: (err as Error).message }, "client went away mid-request");
      this.log.error({ err }, "unhandled error in the Streamable HTTP face");
      if (!res.headersSent) writeFailure(res, refused(500, ErrorCode.InternalError, "Internal gateway error; the gateway is still running"));
      else res.destroy();
    }
  }

  private async handle(req: IncomingMessage, res: ServerResponse, route: Route): Promise<void> {
    // Decided in this tick unless an OAuth token is verified: the body is then read as it is parsed.
    // A request a peer node forwarded was charged to its tenant's rate there.
    const forwardedBy = this.options.cluster?.peers.forwardedBy(req);
    const pending = this.options.edge.admit(edgeRequest(this.name, req), { charge: forwardedBy === undefined });
    const admitted = pending instanceof Promise ? await pending : pending;
    if (!admitted.ok) return writeFailure(res, admitted.failure);
    const { principal } = admitted;
    let body: string | undefined;
    if (req.method === "POST") {
      body = await readBody(req, this.options.maxBodyBytes);
      if (body === undefined) return writeFailure(res, bodyTooLarge(this.options.maxBodyBytes));
      if (jsonDeeperThan(body, this.options.maxJsonDepth)) {
        return writeFailure(res, refused(400, ErrorCode.InvalidRequest, `Invalid request: JSON nested deeper than ${this.options.maxJsonDepth} levels`));
      }
    }
    if (!this.router.hasRoute(route)) return writeFailure(res, noSuchServer(route));
    if (body !== undefined && mayBeModern(body, req.headers)) {
      const era = eraOf(req.headers, parseOrUndefined(body));
      if (era.era === "refused") return writeModernRefusal(res, era.status, era.id, era.error);
      if (era.era === "modern") return this.refusingAtLimits(req, res, principal, () => this.serveModern(req, res, route, principal, era.message, body, forwardedBy));
    }
    const sessionId = req.headers["mcp-session-id"];
    if (typeof sessionId === "string" && sessionId) {
      return this.refusingAtLimits(req, res, principal, async () => {
        const found = await this.find(sessionId, route, principal, req.url);
        if (!found || !("elsewhere" in found)) return this.serveFound(req, res, body, found, principal);
        return this.forward(req, res, body, found.elsewhere, forwardedBy, async () => {
          const again = await this.find(sessionId, route, principal, req.url);
          if (again && "elsewhere" in again) return again.elsewhere;
          await this.serveFound(req, res, body, again, principal);
          return "served";
        });
      });
    }
    if (body === undefined) {
      return writeFailure(res, refused(400, ErrorCode.InvalidRequest, "Bad request: no Mcp-Session-Id header; send initialize first"));
    }
    return this.refusingAtLimits(req, res, principal, () =>
      isInitialize(body) ? this.startSession(req, res, route, body, principal) : this.stateless(req, res, route, body, principal),
    );
  }

  private serveFound(req: IncomingMessage, res: ServerResponse, body: string | undefined, session: FaceSession<StreamableHttpServerTransport> | undefined, principal: Principal): Promise<void> {
    if (!session) return Promise.resolve(writeFailure(res, refused(404, ErrorCode.ConnectionClosed, SESSION_NOT_FOUND)));
    // A session's GET stream lives on; it ends when its credential is revoked or expires. Destroyed,
    // not ended: the transport may still write to it (a keep-alive), which on an ended response is an error.
    if (req.method === "GET") this.options.edge.watch(this.name, principal, res, () => res.destroy());
    return session.transport.handleRequest(req, res, body);
  }

  /**
   * Sends a request to the node running its session, in one hop: a request a peer forwarded here is
   * not forwarded again. An owner that does not answer is asked again until its lease lapses; then the
   * session is gone with it, unless it was saved meanwhile: `again` looks once more, and serves the
   * request here (404 included) unless the session still runs elsewhere.
   */
  private async forward(req: IncomingMessage, res: ServerResponse, body: string | undefined, owner: Owner, forwardedBy: string | undefined, again: () => Promise<Owner | "served">): Promise<void> {
    const cluster = this.options.cluster!;
    if (forwardedBy !== undefined) throw new ClusterUnavailableError(`The session moved from this node to ${owner.node} while the request was on its way; retry`);
    const deadline = Date.now() + cluster.leaseMs;
    for (let target = owner; ; ) {
      if (await cluster.peers.forward(req, res, body, target)) return;
      if (Date.now() > deadline) throw new ClusterUnavailableError(`Node ${target.node}, which runs this session, does not answer; retry`);
      await new Promise((r) => setTimeout(r, 250));
      const next = await again();
      if (next === "served") return;
      target = next;
    }
  }

  /** Runs `serve`; a tenant's limit or a server it may not use, met on the way, refuses the request: nothing was started. */
  private async refusingAtLimits(req: IncomingMessage, res: ServerResponse, principal: Principal, serve: () => Promise<void>): Promise<void> {
    try {
      return await serve();
    } catch (error) {
      if (!isRefusal(error) || res.headersSent) throw error;
      return writeFailure(res, this.options.edge.refuse(edgeRequest(this.name, req), error, principal.subject).failure);
    }
  }

  private async serveModern(req: IncomingMessage, res: ServerResponse, route: Route, principal: Principal, message: JSONRPCRequest | JSONRPCNotification, body: string, forwardedBy: string | undefined): Promise<void> {
    const found = await this.options.modern.transportFor(principal, route, this.name);
    if ("elsewhere" in found) {
      return this.forward(req, res, body, found.elsewhere, forwardedBy, async () => {
        const again = await this.options.modern.transportFor(principal, route, this.name);
        if ("elsewhere" in again) return again.elsewhere;
        await serveModern(req, res, message, again, searchesTools(req.url));
        return "served";
      });
    }
    await serveModern(req, res, message, found, searchesTools(req.url));
  }

  /**
   * The session a request names, when it is this route's: open in this process, or saved before a
   * restart. The one place sessions are looked up by id, so whatever must hold between a session and its
   * caller is checked here.
   */
  private async find(id: string, route: Route, principal: Principal, url: string | undefined): Promise<Found | undefined> {
    if (id.startsWith(MODERN_SESSION_PREFIX)) return undefined; // a 2026-07-28 principal's session is not a client's to name
    if (this.options.cluster && !this.options.cluster.held()) throw new ClusterUnavailableError("This node lost its cluster lease and is joining again; retry");
    const open = this.sessions.touch(id, route, principal.tenant);
    if (open || this.sessions.has(id)) return open;
    // Two requests for one saved session at once revive it once.
    let reviving = this.reviving.get(id);
    if (!reviving) {
      reviving = this.revive(id, route, principal, searchesTools(url)).finally(() => this.reviving.delete(id));
      this.reviving.set(id, reviving);
    }
    const found = await reviving;
    return found && !("elsewhere" in found) ? this.sessions.touch(id, route, principal.tenant) : found;
  }

  private readonly reviving = new Map<string, Promise<Found | undefined>>();

  /**
   * A request without a session (a stateless client): it is answered on its own, in a fresh clone that
   * is destroyed right after (`call` isolation), with a JSON response since there is no stream to keep.
   */
  private async stateless(req: IncomingMessage, res: ServerResponse, route: Route, body: string, principal: Principal): Promise<void> {
    const transport = new StreamableHttpServerTransport();
    await this.router.connect(route, transport, "streamable-http", { stateless: true, principal, toolSearch: searchesTools(req.url) });
    res.once("close", () => void transport.close());
    await transport.handleRequest(req, res, body);
  }

  private async startSession(req: IncomingMessage, res: ServerResponse, route: Route, body: string, principal: Principal): Promise<void> {
    let session: Session | undefined;
    const transport = this.newTransport(route, randomUUID(), principal, () => session?.end() ?? Promise.resolve());
    session = await this.router.connect(route, transport, "streamable-http", { persistent: true, principal, toolSearch: searchesTools(req.url) });
    session.onClosed(() => transport.sessionId && this.sessions.delete(transport.sessionId, "session ended"));
    await transport.handleRequest(req, res, body);
    // Anything but a valid initialize leaves the transport without a session: it has nothing to keep.
    if (!transport.sessionId) void transport.close();
  }

  /** A transport for one session; DELETE ends the session for good (its saved state goes too). */
  private newTransport(route: Route, id: string, principal: Principal, ended: () => Promise<void>): StreamableHttpServerTransport {
    const transport: StreamableHttpServerTransport = new StreamableHttpServerTransport({
      id,
      events: new SessionEventStore(),
      onInitialized: () => this.sessions.add(id, route, transport, principal),
      onDeleted: async () => {
        this.sessions.delete(id, "session closed by client");
        await ended();
      },
    });
    return transport;
  }

  /**
   * A session id this process does not know may belong to a session saved before a restart. It is
   * initialized again here, with what its client declared the first time; the client sees nothing of it.
   */
  private async revive(id: string, route: Route, principal: Principal, toolSearch: boolean): Promise<Found | undefined> {
    let session: Session | undefined;
    const transport = this.newTransport(route, id, principal, () => session?.end() ?? Promise.resolve());
    const revived = await this.router.revive(id, route, transport, principal, toolSearch);
    if (!revived) return undefined;
    if ("elsewhere" in revived) return revived;
    session = revived.session;
    session.onClosed(() => this.sessions.delete(id, "session ended"));
    await transport.restore({
      jsonrpc: "2.0",
      id: "mcpvisor-revive",
      method: "initialize",
      params: { protocolVersion: revived.stored.protocolVersion, capabilities: revived.stored.clientCapabilities, clientInfo: { name: "revived", version: "0" } },
    });
    return this.sessions.touch(id, route, principal.tenant);
  }

}

/** A request body as text, or undefined when it is over `maxBytes` (the rest is then not kept). */
function readBody(req: IncomingMessage, maxBytes: number): Promise<string | undefined> {
  const declared = Number(req.headers["content-length"]); // NaN for a chunked body
  if (declared > maxBytes) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let read = false;
    const whole = () => {
      if (read) return;
      read = true;
      resolve(chunks.length === 1 ? chunks[0]!.toString("utf8") : Buffer.concat(chunks).toString("utf8"));
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        req.off("data", onData);
        return resolve(undefined);
      }
      chunks.push(chunk);
      // node:http hands over exactly Content-Length bytes: with the last of them, 'end' has nothing to add.
      if (size === declared) whole();
    };
    req.on("data", onData);
    req.once("end", whole);
    req.once("error", reject);
    // Settles nothing when the body was read: a promise settles once.
    req.once("close", () => reject(new Error("the client closed the connection before sending the whole body")));
  });
}

function parseOrUndefined(body: string): unknown {
  try {
    return JSON.parse(body);
  } catch {
    return undefined;
  }
}

/** Whether a POST body is (or, in a batch, contains) an initialize request; unreadable bodies count as one. */
function isInitialize(body: string): boolean {
  try {
    const value = JSON.parse(body) as unknown;
    const messages = Array.isArray(value) ? value : [value];
    return messages.some((m) => typeof m === "object" && m !== null && (m as { method?: unknown }).method === "initialize");
  } catch {
    return true; // a new session's transport reports the parse error the usual way
  }
}
