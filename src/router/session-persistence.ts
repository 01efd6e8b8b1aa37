import type { Logger } from "pino";
import type { SessionStore, StoredSession } from "./session-store.js";

/**
 * Keeps a session's record on disk in step with its sandboxes. Only a session whose every sandbox is
 * on disk can be revived after a restart: while one runs, what is on disk is older than what the
 * session holds, so the record goes (a crash then means 404 and a new session, never the older state
 * answered as if current). Saves run one at a time, in the order they were asked for.
 */
export class SessionPersistence {
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: SessionStore,
    readonly route: string,
    /** The session's id, once its transport has one (Streamable HTTP assigns it at initialize). */
    private readonly id: () => string | undefined,
    private readonly log: Logger,
  ) {}

  /** Writes what `build` returns, or deletes the record when it returns undefined. */
  saveSoon(build: (id: string) => StoredSession | undefined): void {
    this.chain = this.chain
      .then(async () => {
        const id = this.id();
        if (id === undefined) return;
        const record = build(id);
        await (record ? this.store.save(record) : this.store.delete(id));
      })
      .catch((err: Error) => this.log.warn({ err: err.message }, "could not save the session"));
  }

  /** Resolves once every save asked for so far is done. */
  settled(): Promise<void> {
    return this.chain;
  }

  async forget(): Promise<void> {
    await this.chain;
    const id = this.id();
    if (id !== undefined) await this.store.delete(id);
  }
}
