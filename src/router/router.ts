import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import type { Logger } from "pino";
import type { SandboxPool } from "../sandbox/pool.js";
import { AggregateSession } from "./aggregate-session.js";
import { ServerSession } from "./server-session.js";
import type { Session } from "./session.js";
import type { SessionStore, StoredSession } from "./session-store.js";
import type { Sandbox } from "../sandbox/sandbox.js";
import { events } from "../telemetry/events.js";

/**
 * Connects client transports to sandboxes: one client session gets one clone of the server's template,
 * resumed on its first request that needs the server and destroyed when the session ends.
 */
export class Router {
  private readonly sessions = new Set<Session>();

  constructor(
    private readonly pool: SandboxPool,
    private readonly log: Logger,
    /** Where sessions with suspended sandboxes are saved; without it nothing outlives the process. */
    private readonly store?: SessionStore,
  ) {}

  /** Whether `route` can be connected: a hosted server's name, or AGGREGATE. */
  hasRoute(route: Route): boolean {
    return route === AGGREGATE || this.pool.has(route);
  }

  /**
   * Takes over the transport's callbacks and starts it. `route` is one hosted server (names unchanged)
   * or `"*"`, every server aggregated with namespaced names.
   */
  async connect(
    route: Route,
    transport: Transport,
    transportKind = "in-memory",
    options: { stateless?: boolean; persistent?: boolean } = {},
  ): Promise<Session> {
    const stateless = options.stateless ?? false;
    const session =
      route === AGGREGATE
        ? new AggregateSession(transport, this.pool, this.log, transportKind, stateless)
        : new ServerSession(route, transport, this.pool, this.log, transportKind, stateless);
    // Only sessions a client can name again (Streamable HTTP's Mcp-Session-Id) are worth saving.
    if (options.persistent && this.store && !stateless) session.enablePersistence(this.store, route);
    events.sessionOpened.publish({ transport: transportKind, route });
    session.onClosed(() => events.sessionClosed.publish({ transport: transportKind, route }));
    this.sessions.add(session);
    session.onClosed(() => this.sessions.delete(session));
    try {
      await transport.start();
    } catch (err) {
      await session.close();
      throw err;
    }
    return session;
  }

  /**
   * Brings back a session saved before a gateway restart: a new session on `transport`, holding the
   * suspended sandboxes it had. Undefined when there is no such session for this route, or when its
   * sandboxes cannot come back (their template was rebuilt, their state is gone): the record is dropped.
   */
  async revive(id: string, route: Route, transport: Transport): Promise<{ session: Session; stored: StoredSession } | undefined> {
    const stored = this.store ? await this.store.load(id) : undefined;
    if (!stored || stored.route !== route) return undefined;
    const adopted: Array<[string, Sandbox]> = [];
    for (const [server, saved] of Object.entries(stored.sandboxes)) {
      const sandbox = this.pool.has(server) ? await this.pool.adoptSuspended(server, saved.sandboxId, saved.templateKey) : undefined;
      if (!sandbox) {
        this.log.warn({ session: id, server }, "saved session cannot come back: its sandbox's template or state is gone");
        for (const [, s] of adopted) await s.destroy("session could not be revived");
        await this.store!.delete(id);
        return undefined;
      }
      adopted.push([server, sandbox]);
    }
    const session = await this.connect(route, transport, stored.transport, { persistent: true });
    for (const [server, sandbox] of adopted) session.adopt(server, sandbox);
    this.log.info({ session: id, route, sandboxes: adopted.length }, "session revived from disk");
    return { session, stored };
  }

  /** Deletes saved sessions older than `maxAgeMs`, with what their sandboxes saved. */
  async expireSaved(maxAgeMs: number): Promise<number> {
    if (!this.store) return 0;
    const expired = await this.store.expire(maxAgeMs);
    for (const session of expired) {
      for (const [server, saved] of Object.entries(session.sandboxes)) await this.pool.discardSuspended(server, saved.sandboxId);
    }
    return expired.length;
  }

  get openSessions(): number {
    return this.sessions.size;
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.sessions].map((s) => s.close()));
  }
}

export type { JSONRPCMessage };

/** Every hosted server at once, names namespaced as `<server>__<name>`. */
export const AGGREGATE = "*";
/** A hosted server's name, or AGGREGATE. */
export type Route = string;
