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

/**
 * Two measurements of one host differ by a few kHz (2445405 and 2445406 here; more under load), and the
 * value is part of every template's key: a new one rebuilt every template and orphaned every suspended
 * session. So the first measurement is kept in the cache and a later one replaces it only when it is
 * off by more than this (another host: a different clock, not noise). 0.1 % of drift in a guest clock
 * that is set on every resume is harmless.
 */
const SAME_CLOCK = 1e-3;

interface StoredTsc {
  cpu: string;
  khz: number;
}

/** The host TSC frequency in kHz, found once per process (stableTscKhz). */
export async function hostTscKhz(ctx: BuildContext): Promise<number> {
  memo ??= await stableTscKhz(ctx);
  return memo;
}

/** Measures the TSC frequency and returns the one kept in the cache unless this host's clock is another. */
export async function stableTscKhz(ctx: BuildContext): Promise<number> {
  const measured = await measureTscKhz(ctx);
  const cpu = await cpuModel();
  const file = path.join(ctx.cacheDir, "images", "host-tsc.json");
  const stored = await readStored(file);
  if (stored && stored.cpu === cpu && Math.abs(measured - stored.khz) / stored.khz <= SAME_CLOCK) return stored.khz;
  await publishAtomically(file, (tmp) => fs.promises.writeFile(tmp, `${JSON.stringify({ cpu, khz: measured } satisfies StoredTsc)}\n`));
  return measured;
}

/** One measurement, by a tiny C tool compiled into the cache. */
async function measureTscKhz(ctx: BuildContext): Promise<number> {
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
  return khz;
}

/** The host CPU's model name: a kept TSC rate belongs to it. */
export async function cpuModel(): Promise<string> {
  const cpuinfo = await fs.promises.readFile("/proc/cpuinfo", "utf8").catch(() => "");
  return /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown";
}

async function readStored(file: string): Promise<StoredTsc | undefined> {
  try {
    const value = JSON.parse(await fs.promises.readFile(file, "utf8")) as Partial<StoredTsc>;
    return typeof value.cpu === "string" && typeof value.khz === "number" && value.khz > 0 ? { cpu: value.cpu, khz: value.khz } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Arguments to append to the guest kernel command line (after the driver's own), e.g.
 * ["tsc_early_khz=2596122"]. They must be the same for a template boot and its clones' host.
 */
export async function guestKernelArgs(ctx: BuildContext): Promise<string[]> {
  return [`tsc_early_khz=${await hostTscKhz(ctx)}`];
}
