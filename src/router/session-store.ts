import { mkdir, readdir, readFile, rm, stat } from "node:fs/promises";
import { z } from "zod";
import { writeAtomically } from "../sandbox/atomic-file.js";
import type { SavedRef } from "../sandbox/suspend-store.js";
import { join } from "node:path";
import type { Claim, SessionRecords } from "./session-records.js";

/** What it takes to bring a session back after a gateway restart: its route and its saved sandboxes. */
export const StoredSessionSchema = z.object({
  id: z.string(),
  /** Only this tenant may bring the session back; records saved before tenants existed are the local user's. */
  tenant: z.string().default("local"),
  route: z.string(),
  transport: z.string(),
  protocolVersion: z.string(),
  clientCapabilities: z.record(z.string(), z.unknown()),
  /**
   * Per server: the suspended sandbox and the template it was cloned from (its state only loads on that),
   * and the shared sandbox it is saved under when the server has one (servers sharing it name the same).
   */
  sandboxes: z.record(z.string(), z.object({ sandboxId: z.string(), templateKey: z.string(), sandbox: z.string().optional() })),
  savedAt: z.string(),
});
export type StoredSession = z.infer<typeof StoredSessionSchema>;
type StoredSandbox = StoredSession["sandboxes"][string];

/** Where a stored session's sandbox for `server` is saved. */
export function savedRefOf(server: string, { sandbox, sandboxId, templateKey }: StoredSandbox): SavedRef {
  return { server: sandbox ?? server, sandboxId, templateKey };
}

/** How a server's saved sandbox is stored in a session's record. */
export function storedSandboxOf(server: string, ref: SavedRef): StoredSandbox {
  return { sandboxId: ref.sandboxId, templateKey: ref.templateKey, ...(ref.server !== server ? { sandbox: ref.server } : {}) };
}

const ID = /^[A-Za-z0-9-]{1,128}$/;

/**
 * Sessions whose sandboxes are suspended, one JSON file each. A file is written to a temporary name,
 * synced and renamed, so a crash at any moment leaves the old record or the new one, never a torn one.
 */
export class SessionStore implements SessionRecords {
  readonly handsOffSaved = false;

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

  async countFor(tenant: string): Promise<number> {
    return this.byTenant.get(tenant)?.size ?? 0;
  }

  async oldestOf(tenant: string): Promise<string | undefined> {
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

  /** A running session has no record on disk: what was saved is older than what it holds. */
  async running(id: string): Promise<void> {
    await this.remove(id);
  }

  async claim(id: string, tenant: string, route: string): Promise<Claim> {
    const record = await this.load(id);
    // Another tenant's session is, to this caller, no session at all.
    return record && record.tenant === tenant && record.route === route ? { kind: "saved", record } : { kind: "none" };
  }

  async save(session: StoredSession): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await writeAtomically(this.path(session.id), async (out) => void out.end(JSON.stringify(session)));
    this.remember(session);
  }

  async load(id: string): Promise<StoredSession | undefined> {
    if (!ID.test(id)) return undefined;
    try {
      // A record that does not parse is as good as none: the session cannot come back from it.
      const parsed = StoredSessionSchema.safeParse(JSON.parse(await readFile(this.path(id), "utf8")));
      return parsed.success ? parsed.data : undefined;
    } catch {
      return undefined;
    }
  }

  async delete(id: string): Promise<StoredSession | undefined> {
    const record = await this.load(id);
    await this.remove(id);
    return record;
  }

  /** Removes a record without reading it (a resume, on its path, has no use for it). */
  private async remove(id: string): Promise<void> {
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
