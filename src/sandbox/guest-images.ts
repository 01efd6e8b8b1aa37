import type { Logger } from "pino";
import {
  buildBaseImage,
  buildServerLayer,
  ensureHostPackages,
  guestKernelArgs,
  PYTHON_HOST_PACKAGES,
  type BaseImage,
  type BuildContext,
} from "../../sandbox/image/index.js";
import type { SandboxUnit } from "../config/sandbox-unit.js";
import type { SandboxDriver, VmSpec } from "./driver.js";
import { chooseAccel, type AccelDecision, type AccelSetting } from "./qemu/accel-probe.js";
import { closeCacheDir, ensureVmmUser } from "./qemu/vmm-user.js";

export interface GuestPlan {
  base: BaseImage;
  accel: AccelDecision;
  /** One spec per sandbox unit, in manifest order; each resolves when that unit's layer is built. */
  specs: Map<string, Promise<VmSpec>>;
}

export interface PrepareOptions {
  build: BuildContext;
  driver: SandboxDriver;
  accel: AccelSetting;
  runDir: string;
  log: Logger;
  /** Under KVM, the guest CPU model (`host`: the host's own). Part of each spec, so of each template's key. */
  kvmCpu?: string;
}

/**
 * Everything a sandbox unit needs before its template can boot: host packages, the user QEMU runs as,
 * the shared base image, the accelerator verdict (probed on the real base image), then each unit's layer.
 * Every step is cached by content, so on a warm machine this is a few hashes.
 */
export async function prepareGuests(units: SandboxUnit[], options: PrepareOptions): Promise<GuestPlan> {
  const { build, driver, log } = options;
  const python = units.some((u) => u.guest.python);
  await ensureHostPackages(build, python ? PYTHON_HOST_PACKAGES : {});
  await ensureVmmUser(build.progress);
  await closeCacheDir(build.cacheDir);
  const base = await buildBaseImage(build, { python });
  // Under TCG the guest cannot calibrate its TSC against anything reliable on a busy host and may hang
  // at boot; the image build measures the host's rate and the guest is told it.
  const kernelArgs = await guestKernelArgs(build);
  const layers = new Map(units.map((u) => [u.name, buildServerLayer(build, u)] as const));
  for (const layer of layers.values()) layer.catch(() => undefined); // each failure is its unit's (below)
  const first = units[0];
  // Any disk labelled as a layer will do for the probe boot; a server whose layer failed must not stop the others.
  const probeLayer = first ? await layers.get(first.name)!.then((l) => l.diskPath, () => base.rootfsPath) : base.rootfsPath;
  const accel = await chooseAccel({
    setting: options.accel,
    spec: {
      image: { kernelPath: base.kernelPath, initrdPath: base.initrdPath, rootfsPath: base.rootfsPath, layerPath: probeLayer },
      memoryMiB: 256,
      vcpus: 1,
      jitless: false,
      kernelArgs,
    },
    qemuVersion: await driver.version(),
    cacheDir: build.cacheDir,
    runDir: options.runDir,
  });
  log.info({ accel: accel.accel, reason: accel.reason }, `accelerator: ${accel.accel}`);
  build.progress(`accelerator: ${accel.accel} (${accel.reason})`);
  const specs = new Map<string, Promise<VmSpec>>();
  for (const unit of units) {
    specs.set(
      unit.name,
      layers.get(unit.name)!.then((layer) => ({
        image: {
          kernelPath: base.kernelPath,
          initrdPath: base.initrdPath,
          rootfsPath: unit.guest.python ? base.pythonRootfsPath! : base.rootfsPath,
          layerPath: layer.diskPath,
        },
        memoryMiB: unit.guest.memoryMiB,
        vcpus: unit.guest.vcpus,
        accel: accel.accel,
        // Under TCG every page of JIT output must be retranslated after a resume; the interpreter's are
        // shared. Not for servers with network: --jitless disables WebAssembly, and node's fetch (undici)
        // cannot parse HTTP without it (it even fails at start when HTTP_PROXY is set).
        jitless: accel.accel === "tcg" && !unit.networked,
        // Stage 2 mounts /workspace with this size (sandbox/image/guest/stage2).
        kernelArgs: [...kernelArgs, `mcpvisor.workspace_mib=${unit.guest.workspaceMiB}`],
        ...(unit.networked ? { egressServer: unit.networked.name } : {}),
        ...(accel.accel === "kvm" && options.kvmCpu && options.kvmCpu !== "host" ? { kvmCpu: options.kvmCpu } : {}),
      })),
    );
  }
  return { base, accel, specs };
}
