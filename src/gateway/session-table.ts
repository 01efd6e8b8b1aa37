import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { Logger } from "pino";
import type { Route } from "../router/router.js";
import type { Session } from "../router/session.js";
import type { Principal } from "../auth/principal.js";

export interface FaceSession<T extends Transport = Transport> {
  route: Route;
  transport: T;
  /** Whose session: only the same tenant may use it by its id. */
  principal: Principal;
  lastSeen: number;
}

/**
 * One face's open sessions by id. Sessions idle past `idleMs` are closed so an abandoned client cannot
 * keep a VM alive forever; `close()` ends them all (gateway shutdown).
 */
export class SessionTable<T extends Transport = Transport> {
  private readonly sessions = new Map<string, FaceSession<T>>();
  private readonly reaper: NodeJS.Timeout;

  constructor(
    /** Whose sessions, for the log; read when logging, so a face may pass itself from its constructor. */
    private readonly face: { readonly name: string },
    private readonly log: Logger,
    private readonly idleMs: number,
  ) {
    this.reaper = setInterval(() => this.reapIdle(), Math.min(idleMs, 30_000));
    this.reaper.unref();
  }

  get size(): number {
    return this.sessions.size;
  }

  add(id: string, route: Route, transport: T, principal: Principal): void {
    this.sessions.set(id, { route, transport, principal, lastSeen: Date.now() });
    this.log.info({ face: this.face.name, route, session: id, tenant: principal.tenant }, "session opened");
  }

  /**
   * Registers a session under `id` before connecting it (so a request naming it early finds it), and
   * forgets it when it ends, or at once if connecting fails (the error is rethrown).
   */
  async open(id: string, route: Route, transport: T, principal: Principal, connect: () => Promise<Session>): Promise<void> {
    this.add(id, route, transport, principal);
    try {
      const session = await connect();
      session.onClosed(() => this.delete(id, "session ended"));
    } catch (error) {
      this.delete(id, "session could not be opened");
      throw error;
    }
  }

  /** Whether a session with this id is open in this process (whoever it belongs to). */
  has(id: string): boolean {
    return this.sessions.has(id);
  }

  /**
   * The session `id` on `route`, marked as used now; undefined once it ended, and also when it belongs
   * to another tenant or route: a caller cannot tell someone else's session from one that never existed.
   */
  touch(id: string, route: Route, tenant: string): FaceSession<T> | undefined {
    const session = this.sessions.get(id);
    if (!session || session.route !== route || session.principal.tenant !== tenant) return undefined;
    session.lastSeen = Date.now();
    return session;
  }

  delete(id: string, why: string): void {
    const session = this.sessions.get(id);
    if (!session) return;
    this.sessions.delete(id);
    this.log.info({ face: this.face.name, route: session.route, session: id }, why);
  }

  private reapIdle(): void {
    const cutoff = Date.now() - this.idleMs;
    for (const [id, session] of this.sessions) {
      if (session.lastSeen < cutoff) {
        this.delete(id, "session idle too long; closing it");
        void session.transport.close();
      }
    }
  }

  async close(): Promise<void> {
    clearInterval(this.reaper);
    const open = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.allSettled(open.map((s) => s.transport.close()));
  }
}
