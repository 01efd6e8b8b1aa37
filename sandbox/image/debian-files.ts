/**
 * Debian packages installed on the host, copied into a guest image: every file `dpkg -L` lists (less
 * documentation), and the shared libraries their ELF files need that the packages do not ship. The guest
 * then runs the very binaries Debian built and the host tested, at the same paths.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { run } from "./exec.js";
import { sharedLibrariesOf } from "./ldd.js";

/** Paths no program reads at run time. */
const SKIPPED = /^\/usr\/share\/(doc|man|info|lintian|bug|bash-completion|locale)\//;

export interface DebianFiles {
  /** package -> installed version, for content hashes. */
  versions: Record<string, string>;
  /** Absolute paths of regular files and symlinks to copy. */
  files: string[];
  /** Shared libraries as the loader names them, with the real file to copy there. */
  libraries: { guestPath: string; hostPath: string }[];
}

export async function installedVersions(packages: readonly string[]): Promise<Record<string, string>> {
  const { stdout } = await run("dpkg-query", ["-W", "-f=${Package} ${Version} ${db:Status-Status}\\n", ...packages], { okCodes: [1] });
  const versions: Record<string, string> = {};
  for (const line of stdout.split("\n")) {
    const [name, version, status] = line.trim().split(/\s+/);
    if (name && version && status === "installed") versions[name] = version;
  }
  const missing = packages.filter((p) => !versions[p]);
  if (missing.length) throw new Error(`Debian packages needed in the guest are not installed on the host: ${missing.join(", ")}`);
  return versions;
}

export async function debianFiles(packages: readonly string[]): Promise<DebianFiles> {
  const versions = await installedVersions(packages);
  const { stdout } = await run("dpkg", ["-L", ...packages]);
  const listed = new Set<string>();
  for (const line of stdout.split("\n")) {
    const file = line.trim();
    if (!file.startsWith("/") || SKIPPED.test(file)) continue;
    const stat = fs.lstatSync(file, { throwIfNoEntry: false });
    if (stat && (stat.isFile() || stat.isSymbolicLink())) listed.add(file);
  }
  return { versions, files: [...listed].sort(), libraries: await sharedLibraries([...listed].filter(isElf)) };
}

function isElf(file: string): boolean {
  try {
    if (!fs.statSync(file).isFile()) return false;
    const fd = fs.openSync(file, "r");
    try {
      const magic = Buffer.alloc(4);
      fs.readSync(fd, magic, 0, 4, 0);
      return magic.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return false;
  }
}

/** What the loader resolves for `elfs` (ldd): the path it names, and the real file behind it. */
async function sharedLibraries(elfs: string[]): Promise<DebianFiles["libraries"]> {
  const found = new Map<string, string>();
  for (const elf of elfs) {
    for (const { path } of await sharedLibrariesOf(elf)) if (path && !found.has(path)) found.set(path, fs.realpathSync(path));
  }
  return [...found].sort().map(([guestPath, hostPath]) => ({ guestPath, hostPath }));
}

/**
 * Copies the files under `root` at the same paths: symlinks as symlinks, hard links as hard links (git's
 * programs are one binary under many names), everything else as a copy with its mode; then each shared
 * library at the path the loader looks for it.
 */
export async function installDebianFiles(debian: DebianFiles, root: string): Promise<void> {
  const byInode = new Map<string, string>();
  for (const file of debian.files) {
    const target = path.join(root, file);
    await fs.promises.mkdir(path.dirname(target), { recursive: true });
    if (fs.existsSync(target) || isLink(target)) continue; // the base image already has it (libc, ...)
    const stat = fs.lstatSync(file);
    if (stat.isSymbolicLink()) {
      await fs.promises.symlink(fs.readlinkSync(file), target);
      continue;
    }
    const inode = `${stat.dev}:${stat.ino}`;
    const first = byInode.get(inode);
    if (first) {
      await fs.promises.link(first, target);
      continue;
    }
    await fs.promises.copyFile(file, target);
    await fs.promises.chmod(target, stat.mode & 0o7777);
    byInode.set(inode, target);
  }
  for (const lib of debian.libraries) {
    const target = path.join(root, lib.guestPath);
    if (fs.existsSync(target)) continue;
    await fs.promises.mkdir(path.dirname(target), { recursive: true });
    await fs.promises.copyFile(lib.hostPath, target);
    await fs.promises.chmod(target, 0o755);
  }
}

function isLink(file: string): boolean {
  return fs.lstatSync(file, { throwIfNoEntry: false })?.isSymbolicLink() ?? false;
}
