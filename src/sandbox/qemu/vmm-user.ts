import { execFile } from "node:child_process";
import { constants } from "node:fs";
import { mkdir, open, type FileHandle } from "node:fs/promises";
import { promisify } from "node:util";
import { VmmStartError } from "../errors.js";

const run = promisify(execFile);

/**
 * Who QEMU runs as. A gateway started as root runs every QEMU as this unprivileged system user, with no
 * capabilities and no way to regain any; a gateway started as anyone else runs QEMU as itself.
 */
export const VMM_USER = "mcpvisor-vm";

export interface VmmIdentity {
  uid: number;
  gid: number;
}

function runningAsRoot(): boolean {
  return process.getuid?.() === 0;
}

async function lookupUser(name: string): Promise<VmmIdentity | undefined> {
  try {
    const { stdout } = await run("getent", ["passwd", name]);
    const [, , uid, gid] = stdout.trim().split(":");
    return { uid: Number(uid), gid: Number(gid) };
  } catch {
    return undefined; // getent exits 2 when there is no such user
  }
}

/**
 * Creates the VMM user when running as root; does nothing when it exists. It gets its own group, no home
 * and no login shell, and joins `kvm` (Debian's owner group of /dev/kvm) when that group exists, so
 * QEMU can use KVM without the gateway's privileges. Run after the host packages are installed, since
 * the `kvm` group may come with them.
 */
export async function ensureVmmUser(progress: (line: string) => void): Promise<void> {
  if (!runningAsRoot()) return;
  if (!(await lookupUser(VMM_USER))) {
    progress(`host user: creating ${VMM_USER} for the QEMU processes`);
    try {
      await run("useradd", ["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "--comment", "mcpvisor QEMU processes", VMM_USER]);
    } catch (err) {
      // A concurrent setup (parallel test processes) may have created it first.
      if (!(await lookupUser(VMM_USER))) throw err;
    }
  }
  const hasKvmGroup = await run("getent", ["group", "kvm"]).then(() => true, () => false);
  if (!hasKvmGroup) return;
  const { stdout } = await run("id", ["-nG", VMM_USER]);
  if (!stdout.trim().split(/\s+/).includes("kvm")) await run("usermod", ["--append", "--groups", "kvm", VMM_USER]);
}

/**
 * Closes the cache directory to everyone but its owner when QEMU runs as the VMM user. QEMU gets its
 * files as descriptors and needs no path in it, while it holds suspended sessions' memory, session
 * records and template state, none of which the VMM user (or any other) should read.
 */
export async function closeCacheDir(cacheDir: string): Promise<void> {
  if (!runningAsRoot()) return;
  await mkdir(cacheDir, { recursive: true, mode: 0o700 });
  const dir = await open(cacheDir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    const { mode } = await dir.stat();
    if (mode & 0o077) await dir.chmod(mode & 0o7700);
  } finally {
    await dir.close();
  }
}

let identity: Promise<VmmIdentity | undefined> | undefined;

/** The identity QEMU runs as, or `undefined` when it runs as the gateway's own user. */
export function vmmIdentity(): Promise<VmmIdentity | undefined> {
  identity ??= runningAsRoot()
    ? lookupUser(VMM_USER).then((found) => {
        if (found) return found;
        identity = undefined;
        throw new VmmStartError(`the gateway runs as root but user ${VMM_USER} does not exist; run \`mcpvisor build\` as root to create it`);
      })
    : Promise.resolve(undefined);
  return identity;
}

/**
 * The `setpriv` options QEMU is started with. Switching from root to the VMM user empties the permitted
 * and effective capability sets; the bounding and inheritable sets are emptied too, and no_new_privs
 * means no setuid binary or file capability can give any back. `--pdeathsig` comes last in setpriv's
 * order of operations, after the uid change that would clear it, so QEMU still dies with the gateway.
 */
export function setprivOptions(as: VmmIdentity | undefined): string[] {
  const always = ["--no-new-privs", "--pdeathsig", "KILL"];
  if (!as) return always;
  return ["--reuid", String(as.uid), "--regid", String(as.gid), "--init-groups", "--inh-caps=-all", "--bounding-set=-all", ...always];
}

/** Whether QEMU's identity may open `path` for reading and writing, asked as that identity (groups included). */
export async function vmmCanReadWrite(path: string): Promise<boolean> {
  const as = await vmmIdentity();
  return run("setpriv", [...setprivOptions(as), "--", "test", "-r", path, "-a", "-w", path]).then(() => true, () => false);
}

/**
 * Lets the VMM user open a file QEMU is handed (see vmm-process.ts): readable through its group, and
 * writable when QEMU needs that. Others lose access to writable files (they hold guest RAM). Goes
 * through the open handle, never the path, so a renamed or swapped path cannot redirect it.
 */
export async function grantToVmm(file: FileHandle, write: boolean, as: VmmIdentity): Promise<void> {
  const st = await file.stat();
  const worldReadable = (st.mode & 0o004) !== 0;
  if (!write && worldReadable) return;
  const mode = write ? (st.mode & 0o700) | 0o060 : (st.mode & 0o7777) | 0o040;
  if (st.gid !== as.gid) await file.chown(st.uid, as.gid);
  if ((st.mode & 0o7777) !== mode) await file.chmod(mode);
}

const preparedRoots = new Map<string, Promise<void>>();

/**
 * The run root holds the sockets the gateway listens on for outgoing migrations. When QEMU runs as the
 * VMM user it must reach them, and nothing else may: the directory stays root's (so QEMU cannot rename
 * or replace anything in it), group VMM user, mode 0710 (enter, not list). A run root that is a symlink
 * or someone else's directory is refused: a predictable path in /tmp could have been planted.
 */
export function prepareRunRoot(runRoot: string, as: VmmIdentity | undefined): Promise<void> {
  let prepared = preparedRoots.get(runRoot);
  if (!prepared) {
    prepared = (async () => {
      await mkdir(runRoot, { recursive: true, mode: 0o700 });
      const dir = await open(runRoot, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
      try {
        const st = await dir.stat();
        if (st.uid !== process.getuid?.()) throw new VmmStartError(`run directory ${runRoot} is owned by uid ${st.uid}, not by the gateway`);
        if (as) {
          await dir.chown(st.uid, as.gid);
          await dir.chmod(0o710);
        }
      } finally {
        await dir.close();
      }
    })();
    prepared.catch(() => preparedRoots.delete(runRoot));
    preparedRoots.set(runRoot, prepared);
  }
  return prepared;
}
