/**
 * The initramfs: busybox-static, the virtio modules and guest/init, packed as a gzip'd newc cpio. Its only
 * job is to load the modules, find the two disks by label and switch_root (or answer the probe boot).
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { createGzip } from "node:zlib";
import { pipeline } from "node:stream/promises";
import { type Busybox, installBusybox } from "./busybox.js";
import { type BuildContext } from "./context.js";
import { run } from "./exec.js";
import { elapsed, exists, formatBytes, hashFile, hashOf, IMAGE_BUILD_VERSION, publishAtomically } from "./hash.js";
import { type Kernel } from "./kernel.js";

export interface Initramfs {
  path: string;
  hash: string;
}

export async function ensureInitramfs(ctx: BuildContext, kernel: Kernel, busybox: Busybox): Promise<Initramfs> {
  const initScript = path.join(ctx.repoRoot, "sandbox", "image", "guest", "init");
  const hash = hashOf({
    v: IMAGE_BUILD_VERSION,
    kernel: `${kernel.pkg}=${kernel.version}`,
    modules: kernel.modulePaths.map((p) => path.basename(p)),
    busybox: busybox.sha256,
    init: await hashFile(initScript),
  });
  const out = path.join(ctx.cacheDir, "images", `initrd-${hash}.cpio.gz`);
  if (exists(out)) return { path: out, hash };

  const started = Date.now();
  await publishAtomically(out, async (tmp) => {
    const root = `${tmp}.root`;
    try {
      await stageInitramfs(root, initScript, kernel, busybox);
      await packCpio(root, tmp);
    } finally {
      await fs.promises.rm(root, { recursive: true, force: true });
    }
  });
  ctx.progress(`initramfs: ${formatBytes(fs.statSync(out).size)}, built in ${elapsed(started)}`);
  return { path: out, hash };
}

async function stageInitramfs(root: string, initScript: string, kernel: Kernel, busybox: Busybox): Promise<void> {
  for (const d of ["proc", "sys", "dev", "newroot", "etc", "lib/modules"]) {
    await fs.promises.mkdir(path.join(root, d), { recursive: true });
  }
  await installBusybox(busybox, root);
  await fs.promises.copyFile(initScript, path.join(root, "init"));
  await fs.promises.chmod(path.join(root, "init"), 0o755);
  for (const ko of kernel.modulePaths) await fs.promises.copyFile(ko, path.join(root, "lib", "modules", path.basename(ko)));
  await fs.promises.writeFile(path.join(root, "etc", "modules"), kernel.modulePaths.map((p) => path.basename(p)).join("\n") + "\n");
  // The kernel opens /dev/console for init's stdio before init can mount devtmpfs: without this node,
  // init starts with no stdio at all. mknod needs root; init also re-opens the console itself.
  try {
    await run("mknod", ["-m", "600", path.join(root, "dev", "console"), "c", "5", "1"]);
  } catch {
    // not root: /init redirects to /dev/console after mounting devtmpfs
  }
}

/** `find . | sort | cpio -o -H newc` in `root`, gzip'd into `out`. Sorted and --reproducible for stable bytes. */
async function packCpio(root: string, out: string): Promise<void> {
  const files = await listTree(root);
  const cpio = spawn("cpio", ["-o", "-H", "newc", "-R", "0:0", "--reproducible", "--quiet"], {
    cwd: root,
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  cpio.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((resolve, reject) => {
    cpio.on("error", (e) => reject(new Error(`cpio: ${e.message}`)));
    cpio.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`cpio -o failed (exit ${code}): ${stderr.trim()}`))));
  });
  cpio.stdin.end(files.join("\n") + "\n");
  await Promise.all([pipeline(cpio.stdout, createGzip({ level: 9 }), fs.createWriteStream(out)), exited]);
}

async function listTree(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string) => {
    const entries = (await fs.promises.readdir(path.join(root, rel), { withFileTypes: true })).sort((a, b) =>
      a.name < b.name ? -1 : 1,
    );
    for (const e of entries) {
      const p = rel === "." ? e.name : `${rel}/${e.name}`;
      out.push(p);
      if (e.isDirectory()) await walk(p);
    }
  };
  await walk(".");
  return out;
}
