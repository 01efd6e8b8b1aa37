/** The host's busybox-static, used in both the initramfs and the base image. */
import * as fs from "node:fs";
import * as path from "node:path";
import { run } from "./exec.js";
import { hashFile } from "./hash.js";

export const BUSYBOX = "/bin/busybox";

export interface Busybox {
  path: string;
  sha256: string;
  applets: string[];
}

export async function hostBusybox(): Promise<Busybox> {
  if (!fs.existsSync(BUSYBOX)) throw new Error(`${BUSYBOX} missing: install busybox-static`);
  const sha = await hashFile(BUSYBOX);
  const { stdout } = await run(BUSYBOX, ["--list"]);
  const applets = stdout.split("\n").map((s) => s.trim()).filter((s) => /^[\w.[-]+$/.test(s) && s !== "busybox");
  return { path: BUSYBOX, sha256: sha, applets };
}

/** Copies busybox to <root>/bin/busybox and links every applet next to it. */
export async function installBusybox(bb: Busybox, root: string, skip: ReadonlySet<string> = new Set()): Promise<void> {
  const bin = path.join(root, "bin");
  await fs.promises.mkdir(bin, { recursive: true });
  await fs.promises.copyFile(bb.path, path.join(bin, "busybox"));
  await fs.promises.chmod(path.join(bin, "busybox"), 0o755);
  for (const applet of bb.applets) {
    if (skip.has(applet)) continue;
    const link = path.join(bin, applet);
    if (!fs.existsSync(link)) await fs.promises.symlink("busybox", link);
  }
}
