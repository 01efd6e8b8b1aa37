/**
 * The guest's node: the host's own binary (same version as the host side, so native addons built by
 * `npm install` on the host load in the guest) plus the shared libraries ldd lists and the loader.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { run } from "./exec.js";
import { sharedLibrariesOf } from "./ldd.js";
import { hashFile } from "./hash.js";

export interface NodeRuntime {
  /** Real path of the host node binary. */
  binary: string;
  version: string;
  sha256: string;
  /** Path as the loader looks for it (what ldd prints) -> real file on the host. */
  libraries: { guestPath: string; hostPath: string; sha256: string }[];
}

export async function hostNodeRuntime(): Promise<NodeRuntime> {
  const binary = fs.realpathSync(process.execPath);
  const libraries: NodeRuntime["libraries"] = [];
  for (const { path: guestPath } of await sharedLibrariesOf(binary)) {
    if (!guestPath) continue;
    const hostPath = fs.realpathSync(guestPath);
    libraries.push({ guestPath, hostPath, sha256: await hashFile(hostPath) });
  }
  if (!libraries.some((l) => /ld-linux/.test(l.guestPath))) throw new Error(`ldd ${binary}: no dynamic loader listed`);
  return { binary, version: process.version, sha256: await hashFile(binary), libraries };
}

/**
 * Installs node at <root>/usr/bin/node and its libraries at the paths the loader expects. Symbols and
 * debug info are stripped (99 MB -> 86 MB measured): node's JS stack traces do not need them.
 */
export async function installNodeRuntime(rt: NodeRuntime, root: string, strip: boolean): Promise<void> {
  const dest = path.join(root, "usr", "bin", "node");
  await fs.promises.mkdir(path.dirname(dest), { recursive: true });
  if (strip) await run("strip", ["-s", "-o", dest, rt.binary]);
  else await fs.promises.copyFile(rt.binary, dest);
  await fs.promises.chmod(dest, 0o755);
  for (const lib of rt.libraries) {
    const target = path.join(root, lib.guestPath);
    await fs.promises.mkdir(path.dirname(target), { recursive: true });
    await fs.promises.copyFile(lib.hostPath, target);
    await fs.promises.chmod(target, 0o755);
  }
}
