/**
 * The guest kernel: Debian's cloud kernel package (small, virtio drivers as modules, ext4 built in),
 * downloaded with apt and unpacked with dpkg, never installed on the host. The artefact is a directory
 * per package version holding vmlinuz and the virtio modules in load order.
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { gunzipSync } from "node:zlib";
import { type BuildContext } from "./context.js";
import { run } from "./exec.js";
import { aptEnv, aptUpdateOnce } from "./host-packages.js";
import { elapsed, exists, formatBytes, publishAtomically } from "./hash.js";

const META_PACKAGE = "linux-image-cloud-amd64";

/** What the guest needs from modules; their depends= pull in the rest (virtio, virtio_ring). */
export const GUEST_MODULES = ["virtio_mmio", "virtio_console", "virtio_blk", "virtio-rng"];

export interface Kernel {
  /** e.g. linux-image-6.1.0-56-cloud-amd64 */
  pkg: string;
  /** Debian package version, e.g. 6.1.192-2 */
  version: string;
  /** uname -r of the guest, e.g. 6.1.0-56-cloud-amd64 */
  release: string;
  vmlinuzPath: string;
  /** Module files (uncompressed .ko), absolute paths, in the order insmod must load them. */
  modulePaths: string[];
}

interface KernelManifest {
  pkg: string;
  version: string;
  release: string;
  modules: string[];
}

const APT_LISTS = "/var/lib/apt/lists";

/**
 * The concrete image package the meta package currently points to, and its version. apt-cache costs
 * ~0.5 s a call here (no pkgcache.bin), too much for the < 2 s warm rebuild, so the answer is memoised
 * in the cache keyed by the apt lists' names, sizes and mtimes: it changes only with `apt-get update`.
 */
export async function resolveKernelPackage(ctx: BuildContext): Promise<{ pkg: string; version: string } | null> {
  const memoFile = path.join(ctx.cacheDir, "images", "kernel-resolution.json");
  const stamp = aptListsStamp();
  try {
    const memo = JSON.parse(fs.readFileSync(memoFile, "utf8")) as { stamp: string; pkg: string; version: string };
    if (stamp && memo.stamp === stamp) return { pkg: memo.pkg, version: memo.version };
  } catch {
    // no memo yet
  }
  for (let attempt = 0; attempt < 2; attempt++) {
    const found = await queryApt();
    if (found) {
      const fresh = aptListsStamp();
      if (fresh) {
        await publishAtomically(memoFile, (tmp) => fs.promises.writeFile(tmp, JSON.stringify({ stamp: fresh, ...found })));
      }
      return found;
    }
    // Empty or stale apt lists (fresh container): refresh once, then ask again.
    if (attempt === 0) await aptUpdateOnce(ctx);
  }
  return null;
}

function aptListsStamp(): string {
  try {
    return fs
      .readdirSync(APT_LISTS, { withFileTypes: true })
      .filter((e) => e.isFile() && e.name !== "lock")
      .map((e) => {
        const st = fs.statSync(path.join(APT_LISTS, e.name));
        return `${e.name}:${st.size}:${st.mtimeMs}`;
      })
      .sort()
      .join("|");
  } catch {
    return "";
  }
}

async function queryApt(): Promise<{ pkg: string; version: string } | null> {
  try {
    const deps = await run("apt-cache", ["depends", META_PACKAGE]);
    const pkg = /Depends:\s*(linux-image-[\w.+-]+-cloud-amd64)\b/.exec(deps.stdout)?.[1];
    if (!pkg) return null;
    const show = await run("apt-cache", ["show", "--no-all-versions", pkg]);
    const version = /^Version:\s*(\S+)/m.exec(show.stdout)?.[1];
    return version ? { pkg, version } : null;
  } catch {
    return null;
  }
}

function kernelDir(ctx: BuildContext, pkg: string, version: string): string {
  return path.join(ctx.cacheDir, "images", `kernel-${pkg.replace(/^linux-image-/, "")}_${version.replace(/[^\w.+-]/g, "_")}`);
}

function loadKernel(dir: string): Kernel | null {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, "kernel.json"), "utf8")) as KernelManifest;
    const vmlinuzPath = path.join(dir, "vmlinuz");
    if (!exists(vmlinuzPath)) return null;
    return { ...m, vmlinuzPath, modulePaths: m.modules.map((f) => path.join(dir, "modules", f)) };
  } catch {
    return null;
  }
}

/** Without apt (offline, no lists), fall back to the newest kernel already in the cache. */
function newestCachedKernel(ctx: BuildContext): Kernel | null {
  const images = path.join(ctx.cacheDir, "images");
  let names: string[] = [];
  try {
    names = fs.readdirSync(images).filter((n) => n.startsWith("kernel-"));
  } catch {
    return null;
  }
  const kernels = names
    .map((n) => ({ k: loadKernel(path.join(images, n)), mtime: fs.statSync(path.join(images, n)).mtimeMs }))
    .filter((x): x is { k: Kernel; mtime: number } => x.k !== null)
    .sort((a, b) => b.mtime - a.mtime);
  return kernels[0]?.k ?? null;
}

export async function ensureKernel(ctx: BuildContext): Promise<Kernel> {
  const resolved = await resolveKernelPackage(ctx);
  if (!resolved) {
    const cached = newestCachedKernel(ctx);
    if (cached) {
      ctx.progress(`kernel: apt cannot resolve ${META_PACKAGE}; using cached ${cached.pkg} ${cached.version}`);
      return cached;
    }
    throw new Error(`kernel: apt-cache cannot resolve ${META_PACKAGE} (is this Debian with apt lists?)`);
  }
  const { pkg, version } = resolved;
  const dir = kernelDir(ctx, pkg, version);
  const cached = loadKernel(dir);
  if (cached) return cached;

  const started = Date.now();
  let deb: string;
  try {
    deb = await downloadDeb(ctx, pkg, version);
  } catch (err) {
    // Lists older than the mirror (the version is gone from it): refresh, resolve again, retry once.
    ctx.progress(`kernel: download failed (${(err as Error).message.split("\n")[0]}); refreshing apt lists`);
    await aptUpdateOnce(ctx);
    const again = await resolveKernelPackage(ctx);
    if (!again || (again.pkg === pkg && again.version === version)) throw err;
    return ensureKernel(ctx);
  }
  await publishAtomically(dir, async (tmp) => {
    const extract = `${tmp}.extract`;
    try {
      await fs.promises.mkdir(extract, { recursive: true });
      ctx.progress(`kernel: unpacking ${path.basename(deb)}`);
      await run("dpkg", ["-x", deb, extract]);
      const release = (await fs.promises.readdir(path.join(extract, "lib", "modules")))[0];
      if (!release) throw new Error(`kernel: ${deb} has no lib/modules/<release>`);
      await fs.promises.mkdir(path.join(tmp, "modules"), { recursive: true });
      await fs.promises.copyFile(path.join(extract, "boot", `vmlinuz-${release}`), path.join(tmp, "vmlinuz"));
      const order = await copyModules(path.join(extract, "lib", "modules", release), path.join(tmp, "modules"));
      const manifest: KernelManifest = { pkg, version, release, modules: order };
      await fs.promises.writeFile(path.join(tmp, "kernel.json"), JSON.stringify(manifest, null, 2) + "\n");
    } finally {
      await fs.promises.rm(extract, { recursive: true, force: true });
    }
  });
  const kernel = loadKernel(dir);
  if (!kernel) throw new Error(`kernel: ${dir} incomplete after build`);
  const size = fs.statSync(kernel.vmlinuzPath).size;
  ctx.progress(
    `kernel: ${kernel.release} ready (vmlinuz ${formatBytes(size)}, modules ${kernel.modulePaths.map((p) => path.basename(p, ".ko")).join(" ")}) in ${elapsed(started)}`,
  );
  return kernel;
}

async function downloadDeb(ctx: BuildContext, pkg: string, version: string): Promise<string> {
  const downloads = path.join(ctx.cacheDir, "downloads");
  const deb = path.join(downloads, `${pkg}_${version.replace(/:/g, "%3a")}_amd64.deb`);
  if (exists(deb)) return deb;
  ctx.progress(`kernel: downloading ${pkg} ${version}`);
  await publishAtomically(deb, async (tmpDir) => {
    // apt-get download writes into its cwd under apt's own file name: use a private directory.
    const work = `${tmpDir}.d`;
    await fs.promises.mkdir(work, { recursive: true });
    try {
      await run("apt-get", ["download", "-q", "-o", "APT::Sandbox::User=root", `${pkg}=${version}`], {
        cwd: work,
        env: aptEnv(),
      });
      const file = (await fs.promises.readdir(work)).find((f) => f.endsWith(".deb"));
      if (!file) throw new Error(`kernel: apt-get download ${pkg}=${version} produced no .deb`);
      await fs.promises.rename(path.join(work, file), tmpDir);
    } finally {
      await fs.promises.rm(work, { recursive: true, force: true });
    }
  });
  ctx.progress(`kernel: downloaded ${path.basename(deb)} (${formatBytes(fs.statSync(deb).size)})`);
  return deb;
}

/** Module name as the kernel spells it in depends=: dashes and underscores are the same. */
const norm = (name: string) => name.replace(/-/g, "_");

/**
 * Copies GUEST_MODULES and everything they depend on into `dest` as plain .ko (busybox insmod cannot
 * read compressed modules), and returns the file names in dependency order.
 */
async function copyModules(moduleRoot: string, dest: string): Promise<string[]> {
  const index = new Map<string, string>(); // normalised name -> path
  const walk = async (dir: string) => {
    for (const e of await fs.promises.readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else {
        const m = /^(.*)\.ko(\.xz|\.zst|\.gz)?$/.exec(e.name);
        if (m) index.set(norm(m[1]!), p);
      }
    }
  };
  await walk(path.join(moduleRoot, "kernel"));

  const order: string[] = [];
  const visiting = new Set<string>();
  const done = new Set<string>();
  const visit = async (name: string, chain: string[]) => {
    const key = norm(name);
    if (done.has(key)) return;
    if (visiting.has(key)) throw new Error(`kernel: module dependency cycle: ${[...chain, name].join(" -> ")}`);
    const src = index.get(key);
    if (!src) throw new Error(`kernel: module ${name} not found under ${moduleRoot} (needed by ${chain.join(" -> ") || "the guest"})`);
    visiting.add(key);
    const ko = await readModule(src);
    for (const dep of moduleDepends(ko)) await visit(dep, [...chain, name]);
    const file = `${path.basename(src).replace(/\.ko(\.xz|\.zst|\.gz)?$/, "")}.ko`;
    await fs.promises.writeFile(path.join(dest, file), ko);
    visiting.delete(key);
    done.add(key);
    order.push(file);
  };
  for (const m of GUEST_MODULES) await visit(m, []);
  return order;
}

async function readModule(file: string): Promise<Buffer> {
  if (file.endsWith(".ko")) return fs.promises.readFile(file);
  if (file.endsWith(".gz")) return gunzipSync(await fs.promises.readFile(file));
  const tool = file.endsWith(".xz") ? "xz" : "zstd";
  const { stdout } = await runBinary(tool, ["-dc", file]);
  return stdout;
}

function runBinary(cmd: string, args: string[]): Promise<{ stdout: Buffer }> {
  // exec.run decodes stdout as text; modules are binary.
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { encoding: "buffer", maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(" ")}: ${stderr.toString() || err.message}`)) : resolve({ stdout }),
    ),
  );
}

/** The `depends=` entry of a module's .modinfo section (what `modinfo -F depends` prints). */
export function moduleDepends(ko: Buffer): string[] {
  const at = ko.indexOf("\0depends=");
  if (at === -1) return [];
  const start = at + "\0depends=".length;
  const end = ko.indexOf(0, start);
  const value = ko.subarray(start, end === -1 ? undefined : end).toString("utf8");
  return value.split(",").filter(Boolean);
}
