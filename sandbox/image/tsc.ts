/**
 * Kernel arguments the guest needs from the host. Today one: the TSC frequency.
 *
 * Measured here: a microvm guest under TCG on a loaded host hangs early in boot in most tries (10 of 12
 * with other builds running), because its kernel cannot calibrate the TSC (no HPET, no ACPI PM timer,
 * and PIT timing is erratic when the vCPU thread is descheduled); the notes' "1 boot in 7 hangs" is
 * this. `tsc_early_khz=<host TSC kHz>` skips the calibration (the TCG guest TSC ticks at the host TSC
 * rate; under KVM too, without TSC scaling): 0 hangs in the same conditions.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { type BuildContext } from "./context.js";
import { run } from "./exec.js";
import { exists, hashOf, publishAtomically, sha256 } from "./hash.js";

let memo: number | null = null;

/** The host TSC frequency in kHz, measured once per process by a tiny C tool compiled into the cache. */
export async function hostTscKhz(ctx: BuildContext): Promise<number> {
  if (memo !== null) return memo;
  const src = path.join(ctx.repoRoot, "sandbox", "image", "host", "tsc-khz.c");
  const source = await fs.promises.readFile(src);
  const tool = path.join(ctx.cacheDir, "images", "bin", `tsc-khz-${hashOf({ source: sha256(source) })}`);
  if (!exists(tool)) {
    await publishAtomically(tool, async (tmp) => {
      await run("gcc", ["-O2", "-o", tmp, src]);
    });
  }
  const khz = Number.parseInt((await run(tool, [])).stdout.trim(), 10);
  if (!Number.isFinite(khz) || khz < 100_000 || khz > 20_000_000) {
    throw new Error(`tsc-khz: implausible host TSC frequency ${khz} kHz`);
  }
  memo = khz;
  return khz;
}

/**
 * Arguments to append to the guest kernel command line (after the driver's own), e.g.
 * ["tsc_early_khz=2596122"]. They must be the same for a template boot and its clones' host.
 */
export async function guestKernelArgs(ctx: BuildContext): Promise<string[]> {
  return [`tsc_early_khz=${await hostTscKhz(ctx)}`];
}
