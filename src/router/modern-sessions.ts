import { createHash } from "node:crypto";
import type { Logger } from "pino";
import { LOCAL_PRINCIPAL, type Principal } from "../auth/principal.js";
import type { Route, Router } from "./router.js";
import type { Session } from "./session.js";
import { DisownedError } from "./session-records.js";
import { ModernTransport, type CacheHints } from "./modern-transport.js";

/** Ids of modern sessions start so: a 2025 client cannot name one as its Mcp-Session-Id. */
export const MODERN_SESSION_PREFIX = "principal-";

type Owner = { node: string; url: string };

interface Entry {
  session: Session;
  transport: ModernTransport;
  lastUsed: number;
}

/**
 * Where a 2026-07-28 request's state lives (docs/design/protocol-eras.md): the revision has no session,
 * so the gateway keeps one per (tenant, principal, route), and every modern request of that principal to
 * that route is served in it, with the sandboxes it holds. Another principal or tenant names another
 * session and never sees this one. It idles to disk like a 2025 session (its id is derived, not sent by
 * the client, so a restart finds its saved record again) and is closed here after `idleMs` unused.
 */
export class ModernSessions {
  private readonly open = new Map<string, Promise<Entry | { elsewhere: Owner }>>();
  private readonly reaper: NodeJS.Timeout;

  constructor(
    private readonly router: Router,
    private readonly log: Logger,
    private readonly idleMs: number,
  ) {
    this.reaper = setInterval(() => void this.reapIdle(), Math.min(idleMs, 30_000)).unref();
  }

  get size(): number {
    return this.open.size;
  }

  /**
   * The principal's session on `route`: open here, saved (before a restart, or by another node), or new;
   * in a cluster, the node it runs on when that is another. Throws a refusal at a tenant's limit.
   */
  async transportFor(principal: Principal, route: Route, transportKind: string): Promise<ModernTransport | { elsewhere: Owner }> {
    const id = sessionIdOf(principal, route);
    let entry = this.open.get(id);
    if (!entry) {
      entry = this.start(id, principal, route, transportKind);
      this.open.set(id, entry);
      entry.then((e) => "elsewhere" in e && this.open.delete(id), () => this.open.delete(id));
    }
    const ready = await entry;
    if ("elsewhere" in ready) return ready;
    ready.lastUsed = Date.now();
    return ready.transport;
  }

  private async start(id: string, principal: Principal, route: Route, transportKind: string): Promise<Entry | { elsewhere: Owner }> {
    // Behind a credential a list may be filtered for the tenant: it must not land in a shared cache. Only
    // the local user (authentication off) gets the same answers as everyone.
    const cache: CacheHints = { ttlMs: 0, cacheScope: principal === LOCAL_PRINCIPAL ? "public" : "private" };
    const transport = new ModernTransport(id, cache);
    const revived = await this.router.revive(id, route, transport, principal);
    if (revived && "elsewhere" in revived) return revived;
    const session = revived?.session ?? (await this.router.connect(route, transport, transportKind, { persistent: true, principal }));
    try {
      // Recorded as running here before it serves: another node asked for it now forwards here.
      await session.opened();
    } catch (err) {
      await session.drop();
      // Another node started it at the same moment: that one serves it.
      if (err instanceof DisownedError) return this.start(id, principal, route, transportKind);
      throw err;
    }
    session.onClosed(() => this.open.delete(id));
    this.log.info({ route, session: id, tenant: principal.tenant, revived: revived !== undefined }, "2026-07-28 session opened");
    return { session, transport, lastUsed: Date.now() };
  }

  /** Sessions unused for `idleMs` have their sandboxes saved, then close: the next request revives them. */
  private async reapIdle(): Promise<void> {
    const cutoff = Date.now() - this.idleMs;
    for (const [id, pending] of this.open) {
      const entry = await pending.catch(() => undefined);
      if (!entry || "elsewhere" in entry || entry.lastUsed >= cutoff) continue;
      this.open.delete(id);
      this.log.info({ session: id }, "2026-07-28 session idle too long; saving and closing it");
      await entry.session.suspendForShutdown();
      await entry.session.close();
    }
  }

  async close(): Promise<void> {
    clearInterval(this.reaper);
    const entries = await Promise.allSettled([...this.open.values()]);
    this.open.clear();
    await Promise.allSettled(entries.map((e) => (e.status === "fulfilled" && !("elsewhere" in e.value) ? e.value.session.close() : undefined)));
  }
}

/**
 * The session of a principal on a route: the same for every request it makes there. Derived, so not a
 * secret: it is never taken from a client (2025 clients' Mcp-Session-Id with this prefix is refused), and a
 * saved one is revived only for its own tenant and route.
 */
function sessionIdOf(principal: Principal, route: Route): string {
  const digest = createHash("sha256").update(JSON.stringify([principal.tenant, principal.subject, route])).digest("hex");
  return `${MODERN_SESSION_PREFIX}${digest.slice(0, 40)}`;
}
