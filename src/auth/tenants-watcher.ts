import { channel } from "node:diagnostics_channel";
import { watch, type FSWatcher } from "node:fs";
import { basename, dirname } from "node:path";
import type { Logger } from "pino";
import type { Gatekeeper } from "./gatekeeper.js";
import { loadTenantsFile } from "./tenants-file.js";

/** Editors and `mcpvisor keys add` replace the file in a burst of events: reload once it settles. */
const SETTLE_MS = 200;

/** The outcome of one reload: `refused` when the file did not load and the previous one stays in force. */
export interface TenantsReloadRecord {
  path: string;
  outcome: "reloaded" | "refused";
}

/** Every reload's outcome, so that one can be seen to have happened without reading the log. */
export const tenantsReloads = channel("mcpvisor:tenants:reload");

/**
 * Reloads the tenants file when it changes, so keys are added and revoked without a restart. The
 * directory is watched, not the file: a file replaced by a rename is a new file. A file that does not
 * parse is refused with an error in the log, and the last good one stays in force.
 */
export function watchTenantsFile(path: string, gatekeeper: Gatekeeper, log: Logger): () => void {
  let timer: NodeJS.Timeout | undefined;
  const reload = () => {
    loadTenantsFile(path).then(
      (tenants) => {
        gatekeeper.replaceTenants(tenants);
        log.info({ path, tenants: Object.keys(tenants.tenants).length, keys: tenants.keys.length }, "tenants file reloaded");
        tenantsReloads.publish({ path, outcome: "reloaded" } satisfies TenantsReloadRecord);
      },
      (err: Error) => {
        log.error({ path, err: err.message }, "tenants file not reloaded: it is invalid; the previous one stays in force");
        tenantsReloads.publish({ path, outcome: "refused" } satisfies TenantsReloadRecord);
      },
    );
  };
  const watcher: FSWatcher = watch(dirname(path), (_event, name) => {
    if (name !== basename(path)) return;
    clearTimeout(timer);
    timer = setTimeout(reload, SETTLE_MS);
  });
  watcher.on("error", (err) => log.warn({ path, err: err.message }, "cannot watch the tenants file; edits take effect at the next start"));
  return () => {
    clearTimeout(timer);
    watcher.close();
  };
}
