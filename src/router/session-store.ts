import { mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";

/** What it takes to bring a session back after a gateway restart: its route and its saved sandboxes. */
export interface StoredSession {
  id: string;
  /** Only this tenant may bring the session back. */
  tenant: string;
  route: string;
  transport: string;
  protocolVersion: string;
  clientCapabilities: Record<string, unknown>;
  /** Per server: the suspended sandbox and the template it was cloned from (its state only loads on that). */
  sandboxes: Record<string, { sandboxId: string; templateKey: string }>;
  savedAt: string;
}

const ID = /^[A-Za-z0-9-]{1,128}$/;

/**
 * Sessions whose sandboxes are suspended, one JSON file each. A file is written to a temporary name,
 * synced and renamed, so a crash at any moment leaves the old record or the new one, never a torn one.
 */
export class SessionStore {
  /** Saved sessions per tenant (id -> when saved), for the tenants' limit on them; filled by `index()`. */
  private readonly byTenant = new Map<string, Map<string, number>>();

  constructor(private readonly dir: string) {}

  /** Reads which tenant every saved session belongs to (once, at start). */
  async index(): Promise<void> {
    let entries: string[];
    try {
      entries = await readdir(this.dir);
    } catch {
      return;
    }
    for (const entry of entries) {
      if (!entry.endsWith(".json")) continue;
      const session = await this.load(entry.slice(0, -5));
      if (session) this.remember(session);
    }
  }

  /** Sessions of `tenant` saved on disk now. */
  countFor(tenant: string): number {
    return this.byTenant.get(tenant)?.size ?? 0;
  }

  /** The id of `tenant`'s least recently saved session, if it has any. */
  oldestOf(tenant: string): string | undefined {
    let oldest: [string, number] | undefined;
    for (const entry of this.byTenant.get(tenant) ?? []) if (!oldest || entry[1] < oldest[1]) oldest = entry;
    return oldest?.[0];
  }

  private remember(session: StoredSession): void {
    this.forget(session.id);
    let ids = this.byTenant.get(session.tenant);
    if (!ids) this.byTenant.set(session.tenant, (ids = new Map()));
    ids.set(session.id, Date.parse(session.savedAt) || 0);
  }

  private forget(id: string): void {
    for (const [tenant, ids] of this.byTenant) if (ids.delete(id) && ids.size === 0) this.byTenant.delete(tenant);
  }

  private path(id: string): string {
    if (!ID.test(id)) throw new Error(`not a session id: ${id}`);
    return join(this.dir, `${id}.json`);
  }

  async save(session: StoredSession): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const final = this.path(session.id);
    const tmp = `${final}.tmp-${process.pid}`;
    const fh = await open(tmp, "w");
    try {
      await fh.writeFile(JSON.stringify(session));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, final);
    this.remember(session);
  }

  async load(id: string): Promise<StoredSession | undefined> {
    if (!ID.test(id)) return undefined;
    try {
      const session = JSON.parse(await readFile(this.path(id), "utf8")) as StoredSession;
      // Records saved before tenants existed belong to the local user.
      return { ...session, tenant: session.tenant ?? "local" };
    } catch {
      return undefined;
    }
  }

  async delete(id: string): Promise<void> {
    if (!ID.test(id)) return;
    await rm(this.path(id), { force: true });
    this.forget(id);
  }

  /** Removes records saved longer ago than `maxAgeMs`; returns them so their saved state can go too. */
  async expire(maxAgeMs: number): Promise<StoredSession[]> {
    let entries: string[];
    try {
      entries = await readdir(this.dir);
    } catch {
      return [];
    }
    const expired: StoredSession[] = [];
    const cutoff = Date.now() - maxAgeMs;
    for (const entry of entries) {
      const path = join(this.dir, entry);
      if (entry.includes(".tmp-")) {
        if ((await stat(path)).mtimeMs < cutoff) await rm(path, { force: true });
        continue;
      }
      if (!entry.endsWith(".json")) continue;
      const session = await this.load(entry.slice(0, -5));
      if (session && Date.parse(session.savedAt) < cutoff) {
        expired.push(session);
        await rm(path, { force: true });
        this.forget(session.id);
      }
    }
    return expired;
  }
}
