/**
 * The Debian packages the image build and the VMM need on the host. Installed only when missing, so a
 * prepared machine (or CI re-run) pays one dpkg-query, not an apt-get.
 */
import { type BuildContext } from "./context.js";
import { hasCommand, run } from "./exec.js";

/** Debian package -> a command it provides (checked too: a package can be installed but broken). */
export const HOST_PACKAGES: Readonly<Record<string, string>> = {
  "qemu-system-x86": "qemu-system-x86_64",
  "busybox-static": "busybox",
  cpio: "cpio",
  e2fsprogs: "mkfs.ext4",
  gcc: "gcc",
  "libc6-dev": "", // static libc.a for the resume helper; no command of its own
};

let aptUpdated = false;

/** `apt-get update` at most once per process: apt-cache and apt-get download need fresh lists too. */
export async function aptUpdateOnce(ctx: BuildContext): Promise<void> {
  if (aptUpdated) return;
  ctx.progress("host packages: apt-get update");
  await run("apt-get", ["update", "-q"], { env: aptEnv() });
  aptUpdated = true;
}

export function aptEnv(): NodeJS.ProcessEnv {
  return { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
}

export async function missingHostPackages(wanted: Readonly<Record<string, string>> = HOST_PACKAGES): Promise<string[]> {
  const names = Object.keys(wanted);
  // Exit 1 when some package is unknown to dpkg: that package is simply missing.
  const { stdout } = await run("dpkg-query", ["-W", "-f=${Package} ${db:Status-Status}\\n", ...names], {
    okCodes: [1],
  });
  const installed = new Set(
    stdout
      .split("\n")
      .map((l) => l.trim().split(/\s+/))
      .filter(([, status]) => status === "installed")
      .map(([name]) => name),
  );
  const missing: string[] = [];
  for (const name of names) {
    const cmd = wanted[name];
    if (!installed.has(name) || (cmd && !(await hasCommand(cmd)))) missing.push(name);
  }
  return missing;
}

/** HOST_PACKAGES, and `extra` ones some servers need (Python's, for `pypi` sources). */
export async function ensureHostPackages(ctx: BuildContext, extra: Readonly<Record<string, string>> = {}): Promise<void> {
  const wanted = { ...HOST_PACKAGES, ...extra };
  const missing = await missingHostPackages(wanted);
  if (missing.length === 0) {
    ctx.progress("host packages: all present");
    return;
  }
  if (process.getuid?.() !== 0) {
    throw new Error(`missing host packages (${missing.join(", ")}); install them as root: apt-get install ${missing.join(" ")}`);
  }
  await aptUpdateOnce(ctx);
  ctx.progress(`host packages: installing ${missing.join(", ")}`);
  await run("apt-get", ["install", "-y", "-q", "--no-install-recommends", ...missing], { env: aptEnv() });
  const still = await missingHostPackages(wanted);
  if (still.length) throw new Error(`host packages still missing after apt-get install: ${still.join(", ")}`);
  ctx.progress("host packages: installed");
}
