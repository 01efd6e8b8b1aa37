import type { StoredSession } from "./session-store.js";

/** What a request naming a session that is not open in this process finds. */
export type Claim =
  /** Saved (every sandbox suspended): it is this process's now, to revive from `record`. */
  | { kind: "saved"; record: StoredSession }
  /** Running on another node of the cluster: requests go there (docs/design/cluster.md). */
  | { kind: "elsewhere"; node: string; url: string }
  /** No such session for this tenant and route (never was, ended, or lost with a node that died). */
  | { kind: "none" };

/**
 * Where sessions' records live: on this node's disk (`SessionStore`), or in the cluster's Redis
 * (`SessionDirectory`), where every change is checked against the node's lease (fencing).
 */
export interface SessionRecords {
  /**
   * The session runs in this process now. What may have been saved of it is older than what it holds,
   * so it can no longer be revived from a record (a crash then means 404, never older state).
   */
  running(id: string, tenant: string, route: string): Promise<void>;
  /** Every sandbox of the session is saved: this record brings it back. */
  save(record: StoredSession): Promise<void>;
  /** Takes a session that is not open in this process, for `tenant` on `route`. */
  claim(id: string, tenant: string, route: string): Promise<Claim>;
  /** Ends a session's record; returns it when it was saved (its sandboxes' saved state is then the caller's to discard). */
  delete(id: string): Promise<StoredSession | undefined>;
  /** Saved sessions of `tenant`. */
  countFor(tenant: string): Promise<number>;
  /** The id of `tenant`'s least recently saved session, if it has any. */
  oldestOf(tenant: string): Promise<string | undefined>;
  /** Removes records saved longer ago than `maxAgeMs`; returns them so their saved state can go too. */
  expire(maxAgeMs: number): Promise<StoredSession[]>;
  /**
   * Whether a saved session leaves this process: in a cluster any node may revive it, so the node that
   * saved it lets go of it at once instead of resuming it without asking.
   */
  readonly handsOffSaved: boolean;
}

/**
 * A change to a session's record was refused: this node no longer owns the session (another node took
 * it over, or this node's lease was lost). It must stop serving the session without saving anything.
 */
export class DisownedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DisownedError";
  }
}
