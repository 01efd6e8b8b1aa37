/**
 * Python servers from PyPI. The guest runs Debian's CPython (the host's, copied in with git and tzdata:
 * debian-files.ts), only in the base image of servers that need it. A server's layer holds its package
 * and dependencies, installed on the host by that same interpreter, so wheels fit the guest's Python
 * and platform, and sdists are built here.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { BuildContext } from "./context.js";
import { run } from "./exec.js";
import { debianFiles } from "./debian-files.js";
import { sharedLibrariesOf } from "./ldd.js";

/** The interpreter, by its Debian path: the host's `python3` on PATH may be another one (pyenv). */
export const PYTHON = "/usr/bin/python3.11";
/** Debian packages of the Python base image (with the libraries their programs load). */
// With glibc's and the C++ runtime's libraries whole: what manylinux wheels may link against.
export const PYTHON_DEBIAN_PACKAGES = [
  "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "python3.11", "python3-minimal", "python3",
  "git", "tzdata", "libc6", "libgcc-s1", "libstdc++6", "zlib1g",
  // pip and venv for code a server runs (exec's commands); offline unless the manifest grants network.
  "python3-pip", "python3-setuptools", "python3-wheel", "python3-pkg-resources", "python3.11-venv", "python3-venv", "python3-distutils", "python3-lib2to3",
];
/** What the host needs to build that image and install packages for it: package -> a command it provides. */
export const PYTHON_HOST_PACKAGES: Readonly<Record<string, string>> = {
  "python3.11": "python3.11", "python3-pip": "", "python3-venv": "", git: "git", tzdata: "",
};
/** Where a server's packages go in its layer (mounted at /srv). */
export const PYTHON_LAYER_DIR = "python";
/** Shared libraries the packages' extensions need beyond the Python base image (LD_LIBRARY_PATH). */
export const PYTHON_LAYER_LIBS = ".libs";

export class PypiInstallError extends Error {}

/**
 * `pip install --target` of the exact release; fails naming the manifest's package when pip does (an
 * unknown version, a wheel that fits no Python 3.11 on x86_64, an sdist that does not build).
 */
export async function pipInstall(ctx: BuildContext, root: string, pkg: string, version: string, extras: string[]): Promise<string> {
  const spec = `${pkg}${extras.length ? `[${extras.join(",")}]` : ""}==${version}`;
  ctx.progress(`layer: pip install ${spec}`);
  const target = path.join(root, PYTHON_LAYER_DIR);
  try {
    await run(PYTHON, ["-m", "pip", "install", "--target", target, "--no-input", "--disable-pip-version-check", "--no-warn-script-location", "--progress-bar", "off", spec], {
      env: { ...process.env, PIP_BREAK_SYSTEM_PACKAGES: "1", PYTHONDONTWRITEBYTECODE: "" },
    });
  } catch (err) {
    const lines = String((err as Error).message).split("\n").filter((l) => /ERROR|error:/i.test(l));
    throw new PypiInstallError(`pip install ${spec} failed: ${lines.slice(-3).join(" ").trim() || (err as Error).message}`);
  }
  return target;
}

/** The console scripts pip installed: what a manifest's `command` may name. */
export function consoleScripts(target: string): string[] {
  try {
    return fs.readdirSync(path.join(target, "bin")).sort();
  } catch {
    return [];
  }
}

/**
 * The shared libraries the installed extensions load: what the Python base image lacks is copied into
 * the layer (an sdist built here may link any host library); one the host cannot resolve either fails
 * the build, naming it.
 */
export async function bundleSharedLibraries(target: string): Promise<string[]> {
  const inBase = await pythonImagePaths();
  const copied: string[] = [];
  const libs = path.join(target, PYTHON_LAYER_LIBS);
  for (const elf of elfFiles(target)) {
    for (const lib of await sharedLibrariesOf(elf)) {
      if (!lib.path) throw new PypiInstallError(`${path.relative(target, elf)} needs ${lib.name}, which this host does not have`);
      // The loader itself (named by its path) is in every image.
      if (lib.name.startsWith("/") || inBase.has(lib.path) || lib.path.startsWith(target)) continue;
      const dest = path.join(libs, lib.name);
      if (fs.existsSync(dest)) continue;
      fs.mkdirSync(libs, { recursive: true });
      fs.copyFileSync(fs.realpathSync(lib.path), dest);
      copied.push(lib.name);
    }
  }
  return copied;
}

let imagePaths: Promise<ReadonlySet<string>> | undefined;

/** Every path the Python image has, listed once per process (the listing runs ldd on each program). */
function pythonImagePaths(): Promise<ReadonlySet<string>> {
  imagePaths ??= debianFiles(PYTHON_DEBIAN_PACKAGES).then((d) => new Set([...d.files, ...d.libraries.flatMap((l) => [l.guestPath, l.hostPath])]));
  return imagePaths;
}

function* elfFiles(dir: string): Generator<string> {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) yield* elfFiles(file);
    else if (entry.isFile() && /\.so(\.|$)/.test(entry.name)) yield file;
  }
}

/**
 * Debian compiles Python's bytecode when a package is installed (py3compile), so `dpkg -L` lists no .pyc
 * and the copied modules would be compiled at every import in the guest, whose root is read-only:
 * seconds per command under emulation. They are compiled once here instead, recorded under their guest
 * paths.
 */
export async function byteCompile(root: string): Promise<void> {
  const dirs = ["usr/lib/python3.11", "usr/lib/python3/dist-packages"].map((d) => path.join(root, d)).filter((d) => fs.existsSync(d));
  await run(PYTHON, ["-m", "compileall", "-q", "-j", "0", "-s", root, "-p", "/", ...dirs], { okCodes: [1] }); // 1: some test files do not compile
}
