import { mkdir, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { release } from "node:os";
import { join } from "node:path";
import type { Accel, VmSpec } from "../driver.js";
import { qemuArgs } from "./argv.js";
import { VmmProcess } from "./vmm-process.js";
import { VMM_USER, vmmCanReadWrite, vmmIdentity } from "./vmm-user.js";

export type AccelSetting = "auto" | Accel;

export interface AccelDecision {
  accel: Accel;
  reason: string;
}

export const PROBE_MARKER = "MCPVISOR_PROBE_OK";
/** A working KVM boots the probe in well under a second; a PVM host's KVM hangs, so the bound is short. */
const PROBE_DEADLINE_MS = 8_000;

export interface ProbeOptions {
  setting: AccelSetting;
  /** The real guest image: the probe boots it, because only that proves KVM can run our guests. */
  spec: Omit<VmSpec, "accel">;
  qemuVersion: string;
  cacheDir: string;
  runDir: string;
}

/**
 * Decides between KVM and TCG. `/dev/kvm` existing is not enough (a PVM host's KVM opens fine but runs
 * no stock guest), so `auto` boots the guest image under KVM with a short deadline and caches the
 * verdict per guest kernel, QEMU version and host kernel.
 */
export async function chooseAccel(options: ProbeOptions): Promise<AccelDecision> {
  if (options.setting === "tcg") return { accel: "tcg", reason: "forced by configuration (accel: tcg)" };
  if (options.setting === "kvm") return { accel: "kvm", reason: "forced by configuration (accel: kvm)" };
  // Asked as QEMU's identity (the probe boots as it too): the gateway being root proves nothing.
  if (!(await vmmCanReadWrite("/dev/kvm"))) {
    const who = (await vmmIdentity()) ? `user ${VMM_USER}` : "this user";
    return { accel: "tcg", reason: `/dev/kvm is absent or not accessible to ${who}` };
  }
  const cacheFile = join(options.cacheDir, "accel-probe.json");
  const key = `${options.spec.image.kernelPath}|${options.qemuVersion}|${release()}`;
  const cache = await readCache(cacheFile);
  const cached = cache[key];
  if (cached) return { accel: cached.ok ? "kvm" : "tcg", reason: `${cached.reason} (probe cached ${cached.at})` };

  const result = await probeKvm(options);
  cache[key] = { ...result, at: new Date().toISOString() };
  await mkdir(options.cacheDir, { recursive: true });
  await writeFile(cacheFile, JSON.stringify(cache, null, 2));
  return { accel: result.ok ? "kvm" : "tcg", reason: result.reason };
}

async function probeKvm(options: ProbeOptions): Promise<{ ok: boolean; reason: string }> {
  const spec: VmSpec = { ...options.spec, accel: "kvm", memoryMiB: 256 };
  const started = Date.now();
  await mkdir(options.runDir, { recursive: true });
  const ramPath = join(options.runDir, `probe-${process.pid}.ram`);
  await writeFile(ramPath, "");
  await truncate(ramPath, spec.memoryMiB * 1024 * 1024);
  const { kernelPath, initrdPath, rootfsPath, layerPath } = spec.image;
  const files = { kernel: kernelPath, initrd: initrdPath, rootfs: rootfsPath, layer: layerPath, ram: ramPath };
  const proc = await VmmProcess.start(`probe-${process.pid}`, options.runDir, files, (files) =>
    qemuArgs({ spec, files, ramShared: false, incoming: false, cmdlineExtra: ["mcpvisor.probe=1"] }),
  );
  const sawMarker = new Promise<boolean>((resolve) => {
    const stop = proc.onConsole(() => {
      if (proc.console.toString().includes(PROBE_MARKER)) {
        stop();
        resolve(true);
      }
    });
    void proc.exited.then(() => resolve(proc.console.toString().includes(PROBE_MARKER)));
    setTimeout(() => resolve(false), PROBE_DEADLINE_MS).unref();
  });
  const ok = await sawMarker;
  await proc.kill("probe finished");
  const exit = await proc.exited;
  await rm(ramPath, { force: true });
  if (ok) return { ok: true, reason: `KVM probe booted the guest in ${Date.now() - started} ms` };
  const why = exit.vmmStderrTail.trim().split("\n").pop() || `no guest output within ${PROBE_DEADLINE_MS} ms`;
  return { ok: false, reason: `KVM probe failed (${why}); /dev/kvm exists but cannot run this guest (a PVM host?)` };
}

async function readCache(file: string): Promise<Record<string, { ok: boolean; reason: string; at: string }>> {
  try {
    return JSON.parse(await readFile(file, "utf8"));
  } catch {
    return {};
  }
}
