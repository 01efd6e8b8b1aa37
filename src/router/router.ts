import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { Logger } from "pino";
import type { SandboxPool } from "../sandbox/pool.js";
import { AggregateSession } from "./aggregate-session.js";
import { ServerSession } from "./server-session.js";
import type { Session, SessionOwner } from "./session.js";
import { LOCAL_PRINCIPAL, mayUseServer, type Principal } from "../auth/principal.js";
import { AccessError } from "../auth/access-error.js";
import { TenantCounter, type TenantHolds } from "../tenancy/tenant-counter.js";
import type { SessionRecords } from "./session-records.js";
import { savedRefOf, type StoredSession } from "./session-store.js";
import { events } from "../telemetry/events.js";

export interface ConnectOptions {
  /** A request without a session: answered in a clone of its own (`call` isolation). */
  stateless?: boolean;
  /** The client can name the session again (Mcp-Session-Id): it is saved while its sandboxes are suspended. */
  persistent?: boolean;
  /** Who opens it; the local user when absent (authentication off, or stdio). */
  principal?: Principal;
  /** Coming back after a gateway restart (admitted against the tenant's limits before). */
  revived?: boolean;
  /** Tool search mode: the client sees search_tools and call_tool instead of every tool. */
  toolSearch?: boolean;
}

/**
 * Connects client transports to sandboxes: one client session gets a lease per server it uses, whose
 * sandbox is resumed on the session's first request that needs the server and released when the
 * session ends.
 */
export class Router {
  private readonly sessions = new Set<Session>();

  constructor(
    private readonly pool: SandboxPool,
    private readonly log: Logger,
    /** Where sessions with suspended sandboxes are saved; without it nothing outlives the process. */
    private readonly store?: SessionRecords,
    /** Tenants' open sessions: counted in this process, or across the cluster. */
    private readonly openSessions: TenantHolds = new TenantCounter("sessions", "open sessions"),
  ) {}

  /** Whether `route` can be connected: a hosted server's name, or AGGREGATE. */
  hasRoute(route: Route): boolean {
    return route === AGGREGATE || this.pool.has(route);
  }

  /**
   * Takes over the transport's callbacks and starts it. `route` is one hosted server (names unchanged)
   * or `"*"`, every server aggregated with namespaced names.
   */
  async connect(route: Route, transport: Transport, transportKind = "in-memory", options: ConnectOptions = {}): Promise<Session> {
    const stateless = options.stateless ?? false;
    const principal = options.principal ?? LOCAL_PRINCIPAL;
    if (route !== AGGREGATE && !mayUseServer(principal, route)) {
      throw new AccessError(`Tenant '${principal.tenant}' may not use server '${route}'; its servers: ${principal.servers === "*" ? "all" : principal.servers.join(", ") || "none"}`);
    }
    // Stateless requests are no session to hold: the request rate and the sandbox limit cover them.
    const release = stateless ? () => undefined : await this.holdSession(principal, options.revived ?? false);
    const owner: SessionOwner = { principal, lease: { tenant: principal.tenant, maxSandboxes: principal.limits.maxSandboxes } };
    const session =
      route === AGGREGATE
        ? new AggregateSession(transport, this.pool, this.log, transportKind, owner, stateless)
        : new ServerSession(route, transport, this.pool, this.log, transportKind, owner, stateless);
    session.toolSearch = options.toolSearch ?? false;
    session.onClosed(release);
    // Only sessions a client can name again (Streamable HTTP's Mcp-Session-Id) are worth saving.
    if (options.persistent && this.store && !stateless) session.enablePersistence(this.store, route, options.revived ?? false);
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
   * Counts a new session against its tenant's open sessions, and makes room among its saved ones (each
   * new session may end up saved too). A session coming back after a restart was admitted before.
   */
  private async holdSession(principal: Principal, revived: boolean): Promise<() => void> {
    const { tenant, limits } = principal;
    const release = await this.openSessions.take(tenant, revived ? Number.POSITIVE_INFINITY : limits.maxSessions);
    if (!revived) await this.evictSaved(tenant, limits.maxSuspended).catch((err: Error) => this.log.warn({ tenant, err: err.message }, "could not evict a saved session"));
    return release;
  }

  /**
   * A tenant at its limit of saved (suspended) sessions loses its least recently saved one, as a bounded
   * cache would: clients that never end their sessions (many never send DELETE) must not lock their
   * tenant out. The evicted session ends for good: its client gets 404 and starts a new one.
   */
  private async evictSaved(tenant: string, limit: number): Promise<void> {
    const store = this.store;
    if (!store) return;
    for (let count = await store.countFor(tenant); count > 0 && count >= limit; count = await store.countFor(tenant)) {
      const id = await store.oldestOf(tenant);
      if (id === undefined) return;
      const live = [...this.sessions].find((s) => s.id === id);
      if (live) {
        await live.end();
      } else {
        await this.discard(await store.delete(id));
      }
      this.log.info({ tenant, session: id, limit }, "saved session evicted: the tenant is at its limit of suspended sessions");
    }
  }

  /** Deletes what a saved session's sandboxes saved. */
  private async discard(saved: StoredSession | undefined): Promise<void> {
    for (const [server, sandbox] of Object.entries(saved?.sandboxes ?? {})) await this.pool.discardSaved(savedRefOf(server, sandbox));
  }



  /**
   * Brings back a saved session (after a gateway restart, or saved by another node of the cluster): a new
   * session on `transport`, holding the suspended sandboxes it had. Undefined when there is no such
   * session for this tenant and route, or when its sandboxes cannot come back (their template was
   * rebuilt, their state is gone): the record is dropped. `elsewhere` when it runs on another node.
   */
  async revive(id: string, route: Route, transport: Transport, principal: Principal = LOCAL_PRINCIPAL, toolSearch = false): Promise<Revived | { elsewhere: { node: string; url: string } } | undefined> {
    const claim = this.store ? await this.store.claim(id, principal.tenant, route) : { kind: "none" as const };
    events.cluster.publish({ kind: "claim", outcome: claim.kind === "saved" ? "revived" : claim.kind === "elsewhere" ? "elsewhere" : "gone" });
    if (claim.kind === "elsewhere") return { elsewhere: { node: claim.node, url: claim.url } };
    if (claim.kind === "none") return undefined;
    const stored = claim.record;
    const session = await this.connect(route, transport, stored.transport, { persistent: true, principal, revived: true, toolSearch });
    for (const [server, saved] of Object.entries(stored.sandboxes)) {
      if (!(await session.adopt(server, savedRefOf(server, saved)))) {
        this.log.warn({ session: id, server }, "saved session cannot come back: its sandbox's template or state is gone");
        await session.end();
        return undefined;
      }
    }
    this.log.info({ session: id, route, sandboxes: Object.keys(stored.sandboxes).length }, "session revived from disk");
    return { session, stored };
  }

  /** Deletes saved sessions older than `maxAgeMs`, with what their sandboxes saved. */
  async expireSaved(maxAgeMs: number): Promise<number> {
    if (!this.store) return 0;
    const expired = await this.store.expire(maxAgeMs);
    for (const session of expired) await this.discard(session);
    return expired.length;
  }

  /** What `tenant` holds now: open sessions, saved sessions, sandboxes running (the first two cluster-wide in a cluster). */
  async tenantUsage(tenant: string): Promise<{ openSessions: number; suspendedSessions: number; runningSandboxes: number }> {
    return {
      openSessions: await this.openSessions.count(tenant),
      suspendedSessions: (await this.store?.countFor(tenant)) ?? 0,
      runningSandboxes: this.pool.runningSandboxes(tenant),
    };
  }

  /**
   * This node lost its cluster lease: another node may already serve its sessions' clients. Every
   * session ends here at once, its sandboxes destroyed and nothing saved (a save would be refused).
   */
  async fence(): Promise<void> {
    await Promise.allSettled([...this.sessions].map((s) => s.drop()));
  }

  /**
   * Saves the running sandboxes of every session that can be revived, a few at a time (each suspend
   * streams guest RAM), until `deadlineMs` has passed; what is saved by then outlives the process. A
   * sandbox busy with a request is saved once the request is answered, if that is before the deadline.
   */
  async suspendSessions(deadlineMs: number): Promise<void> {
    const deadline = Date.now() + deadlineMs;
    const pass = async () => {
      const queue = [...this.sessions].filter((s) => s.unsaved);
      const worker = async () => {
        for (let session = queue.shift(); session && Date.now() < deadline; session = queue.shift()) await session.suspendForShutdown();
      };
      await Promise.race([Promise.all(Array.from({ length: 4 }, worker)), new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now())).unref())]);
    };
    await pass();
    while (Date.now() < deadline && [...this.sessions].some((s) => s.unsaved)) {
      await new Promise((r) => setTimeout(r, 100));
      await pass();
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.sessions].map((s) => s.close()));
  }
}

export interface Revived {
  session: Session;
  stored: StoredSession;
}

/** Every hosted server at once, names namespaced as `<server>__<name>`. */
export const AGGREGATE = "*";
/** A hosted server's name, or AGGREGATE. */
export type Route = string;
