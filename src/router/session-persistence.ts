import type { Logger } from "pino";
import { DisownedError, type SessionRecords } from "./session-records.js";
import type { StoredSession } from "./session-store.js";

/**
 * Keeps a session's record in step with its sandboxes. Only a session whose every sandbox is saved can
 * be revived (after a restart, or on another node): while one runs, what is saved is older than what
 * the session holds, so the record says it runs here (a crash then means 404 and a new session, never
 * the older state answered as if current). Saves run one at a time, in the order they were asked for.
 */
export class SessionPersistence {
  private chain: Promise<void> = Promise.resolve();
  /** Set once this process must not write the record any more (handed off, or disowned). */
  private done = false;

  constructor(
    private readonly store: SessionRecords,
    readonly route: string,
    private readonly tenant: string,
    /** The session's id, once its transport has one (Streamable HTTP assigns it at initialize). */
    private readonly id: () => string | undefined,
    private readonly log: Logger,
    /**
     * The session must leave this process, its saved state kept: it was saved in a cluster, where any
     * node revives it (`handsOffSaved`), or another node owns it now.
     */
    private readonly letGo: () => void,
    /**
     * Revived from its record, which the claim made this node's (in a cluster) or which stays until a
     * sandbox resumes (one node): nothing to record at its (replayed) initialize.
     */
    private readonly revived = false,
  ) {}

  /** Writes what `build` returns, or marks the session running here when it returns undefined. */
  saveSoon(build: (id: string) => StoredSession | undefined): void {
    this.chain = this.chain.then(async () => {
      const id = this.id();
      if (id === undefined || this.done) return;
      const record = build(id);
      try {
        await (record ? this.store.save(record) : this.store.running(id, this.tenant, this.route));
      } catch (err) {
        if (err instanceof DisownedError) return this.handOff(id, err.message);
        this.log.warn({ session: id, err: (err as Error).message }, "could not save the session");
      }
      // Saved, or perhaps saved (no answer): either way another node may revive it now.
      if (record && this.store.handsOffSaved) this.handOff(id, "saved; any node of the cluster revives it");
    });
  }

  /**
   * The session was just initialized here: its record says so before the client learns its id, so that
   * in a cluster a request reaching another node is sent here. Throws when that cannot be recorded.
   */
  async opened(): Promise<void> {
    const id = this.id();
    if (id === undefined || this.done || this.revived) return;
    const step = this.chain.then(() => this.store.running(id, this.tenant, this.route));
    this.chain = step.catch(() => undefined);
    await step;
  }

  private handOff(id: string, why: string): void {
    this.done = true;
    this.log.info({ session: id, why }, "session leaves this node");
    this.letGo();
  }

  /** Stops writing the record: the session is dropped by a fenced node, whose writes would be refused anyway. */
  disown(): void {
    this.done = true;
  }

  /** Resolves once every save asked for so far is done. */
  settled(): Promise<void> {
    return this.chain;
  }

  async forget(): Promise<void> {
    await this.chain;
    const id = this.id();
    if (id !== undefined && !this.done) await this.store.delete(id).catch((err: Error) => this.log.warn({ session: id, err: err.message }, "could not delete the session's record"));
  }
}
