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
import { needsPython, type ServerManifest } from "../config/manifest.js";
import type { SandboxDriver, VmSpec } from "./driver.js";
import { chooseAccel, type AccelDecision, type AccelSetting } from "./qemu/accel-probe.js";
import { closeCacheDir, ensureVmmUser } from "./qemu/vmm-user.js";

export interface GuestPlan {
  base: BaseImage;
  accel: AccelDecision;
  /** One spec per server, in manifest order; each resolves when that server's layer is built. */
  specs: Map<string, Promise<VmSpec>>;
}

export interface PrepareOptions {
  build: BuildContext;
  driver: SandboxDriver;
  accel: AccelSetting;
  runDir: string;
  log: Logger;
}

/**
 * Everything a server needs before its template can boot: host packages, the user QEMU runs as, the
 * shared base image, the accelerator verdict (probed on the real base image), then each server's layer.
 * Every step is cached by content, so on a warm machine this is a few hashes.
 */
export async function prepareGuests(manifests: ServerManifest[], options: PrepareOptions): Promise<GuestPlan> {
  const { build, driver, log } = options;
  const python = manifests.some(needsPython);
  await ensureHostPackages(build, python ? PYTHON_HOST_PACKAGES : {});
  await ensureVmmUser(build.progress);
  await closeCacheDir(build.cacheDir);
  const base = await buildBaseImage(build, { python });
  // Under TCG the guest cannot calibrate its TSC against anything reliable on a busy host and may hang
  // at boot; the image build measures the host's rate and the guest is told it.
  const kernelArgs = await guestKernelArgs(build);
  const layers = new Map(manifests.map((m) => [m.name, buildServerLayer(build, m)] as const));
  for (const layer of layers.values()) layer.catch(() => undefined); // each failure is its server's (below)
  const first = manifests[0];
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
  for (const manifest of manifests) {
    specs.set(
      manifest.name,
      layers.get(manifest.name)!.then((layer) => ({
        image: {
          kernelPath: base.kernelPath,
          initrdPath: base.initrdPath,
          rootfsPath: needsPython(manifest) ? base.pythonRootfsPath! : base.rootfsPath,
          layerPath: layer.diskPath,
        },
        memoryMiB: manifest.guest.memoryMiB,
        vcpus: manifest.guest.vcpus,
        accel: accel.accel,
        // Under TCG every page of JIT output must be retranslated after a resume; the interpreter's are
        // shared. Not for servers with network: --jitless disables WebAssembly, and node's fetch (undici)
        // cannot parse HTTP without it (it even fails at start when HTTP_PROXY is set).
        jitless: accel.accel === "tcg" && manifest.network === false,
        kernelArgs,
        ...(manifest.network !== false ? { egressServer: manifest.name } : {}),
      })),
    );
  }
  return { base, accel, specs };
}
