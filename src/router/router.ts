import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import type { Logger } from "pino";
import type { SandboxPool } from "../sandbox/pool.js";
import { AggregateSession } from "./aggregate-session.js";
import { ServerSession } from "./server-session.js";
import type { Session } from "./session.js";
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
  ) {}

  /** Whether `route` can be connected: a hosted server's name, or AGGREGATE. */
  hasRoute(route: Route): boolean {
    return route === AGGREGATE || this.pool.has(route);
  }

  /**
   * Takes over the transport's callbacks and starts it. `route` is one hosted server (names unchanged)
   * or `"*"`, every server aggregated with namespaced names.
   */
  async connect(route: Route, transport: Transport, transportKind = "in-memory", options: { stateless?: boolean } = {}): Promise<Session> {
    const stateless = options.stateless ?? false;
    const session =
      route === AGGREGATE
        ? new AggregateSession(transport, this.pool, this.log, transportKind, stateless)
        : new ServerSession(route, transport, this.pool, this.log, transportKind, stateless);
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
