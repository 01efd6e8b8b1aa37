import { access, mkdir, rm } from "node:fs/promises";
import { join } from "node:path";

/**
 * What a suspended sandbox leaves behind: enough to find its saved state again, after a gateway restart
 * or on another node. `templateKey` is the template's id (`templateIdOf`: its key and a digest of its
 * bytes): a saved diff loads over those very bytes only.
 */
export interface SavedRef {
  server: string;
  sandboxId: string;
  templateKey: string;
}

/** Where suspended sandboxes are saved: `<dir>/<server>/<sandbox id>.mig.gz`, one file each. */
export class SuspendStore {
  constructor(private readonly dir: string) {}

  /** The file a sandbox is saved to; ids that could name a path elsewhere are refused. */
  pathFor(server: string, sandboxId: string): string {
    if (!/^[\w-]+$/.test(server) || !/^[\w-]+$/.test(sandboxId)) throw new Error(`not a sandbox reference: ${server}/${sandboxId}`);
    return join(this.dir, server, `${sandboxId}.mig.gz`);
  }

  /** The path to save to, its directory made. */
  async prepare(server: string, sandboxId: string): Promise<string> {
    const path = this.pathFor(server, sandboxId);
    await mkdir(join(this.dir, server), { recursive: true });
    return path;
  }

  async exists(server: string, sandboxId: string): Promise<boolean> {
    try {
      await access(this.pathFor(server, sandboxId));
      return true;
    } catch {
      return false;
    }
  }

  async discard(server: string, sandboxId: string): Promise<void> {
    let path: string;
    try {
      path = this.pathFor(server, sandboxId);
    } catch {
      return; // a reference that names no file of ours has nothing to delete
    }
    await rm(path, { force: true });
  }
}
