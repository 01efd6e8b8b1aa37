import { spawn } from "node:child_process";
import { constants } from "node:fs";
import { access } from "node:fs/promises";

/**
 * `binary`, installing Debian's `pkg` first when it is missing (once; a fresh CI machine has it not).
 * The package lists are refreshed only when installing from the current ones fails.
 */
export async function ensureDebianPackage(pkg: string, binary: string): Promise<string> {
  if (await executable(binary)) return binary;
  process.stderr.write(`test services: installing Debian's ${pkg} package (apt-get, once)\n`);
  const install = ["install", "-y", "--no-install-recommends", pkg];
  if (!(await aptGet(install)) && !((await aptGet(["update"])) && (await aptGet(install)))) {
    throw new Error(`apt-get could not install ${pkg} (output above); these tests need Debian's package and root`);
  }
  if (!(await executable(binary))) throw new Error(`apt-get installed ${pkg}, yet there is no ${binary}`);
  return binary;
}

function executable(path: string): Promise<boolean> {
  return access(path, constants.X_OK).then(() => true, () => false);
}

/** Runs apt-get with its output on stderr (progress for whoever waits); resolves whether it succeeded. */
export function aptGet(args: string[]): Promise<boolean> {
  return new Promise((resolve, reject) => {
    // Lock::Timeout waits for a concurrent apt-get (another test process installing too) instead of failing.
    const child = spawn("apt-get", ["-o", "DPkg::Lock::Timeout=300", ...args], {
      stdio: ["ignore", 2, 2],
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
    child.once("error", (err) => reject(new Error(`cannot run apt-get (${err.message}); install the package by hand`, { cause: err })));
    child.once("exit", (code) => resolve(code === 0));
  });
}
