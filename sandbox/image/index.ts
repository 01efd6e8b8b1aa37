/**
 * Guest image builds: the base image (kernel, initramfs, root filesystem) shared by every sandbox, and
 * one layer disk per sandbox unit (a server, or the servers sharing a sandbox). Every artefact is content-addressed in the cache, so a rebuild with
 * nothing changed only recomputes hashes.
 */
import * as path from "node:path";
import type { SandboxUnit } from "../../src/config/sandbox-unit.js";
import { hostBusybox } from "./busybox.js";
import { type BuildContext } from "./context.js";
import { elapsed, hashOf, sweepStaleTemps } from "./hash.js";
import { ensureInitramfs } from "./initramfs.js";
import { ensureKernel } from "./kernel.js";
import { buildServerLayer as buildLayer, type ServerLayer } from "./layer.js";
import { PYTHON_DEBIAN_PACKAGES } from "./python.js";
import { ensureRootfs } from "./rootfs.js";

export type { BuildContext } from "./context.js";
export type { ServerLayer } from "./layer.js";
export { ensureHostPackages } from "./host-packages.js";
export { PYTHON_HOST_PACKAGES } from "./python.js";
export { BASE_LABEL } from "./rootfs.js";
export { LAYER_LABEL } from "./layer.js";
export { guestKernelArgs, hostTscKhz } from "./tsc.js";

export interface BaseImage {
  hash: string;
  kernelPath: string;
  kernelRelease: string;
  initrdPath: string;
  rootfsPath: string;
  /** The root filesystem with CPython and git too, built when some server needs it (a `pypi` source). */
  pythonRootfsPath?: string;
}

export async function buildBaseImage(ctx: BuildContext, options: { python?: boolean } = {}): Promise<BaseImage> {
  const started = Date.now();
  await sweepStaleTemps(path.join(ctx.cacheDir, "images"));
  await sweepStaleTemps(path.join(ctx.cacheDir, "downloads"));
  const busybox = await hostBusybox();
  const kernel = await ensureKernel(ctx);
  const [initrd, rootfs, pythonRootfs] = await Promise.all([
    ensureInitramfs(ctx, kernel, busybox),
    ensureRootfs(ctx, busybox),
    options.python ? ensureRootfs(ctx, busybox, PYTHON_DEBIAN_PACKAGES) : undefined,
  ]);
  const image: BaseImage = {
    hash: hashOf({ kernel: `${kernel.pkg}=${kernel.version}`, initrd: initrd.hash, rootfs: rootfs.hash }),
    kernelPath: kernel.vmlinuzPath,
    kernelRelease: kernel.release,
    initrdPath: initrd.path,
    rootfsPath: rootfs.path,
    ...(pythonRootfs ? { pythonRootfsPath: pythonRootfs.path } : {}),
  };
  ctx.progress(`base image ${image.hash}: kernel ${kernel.release}, ready in ${elapsed(started)}`);
  return image;
}

export async function buildServerLayer(ctx: BuildContext, unit: SandboxUnit): Promise<ServerLayer> {
  await sweepStaleTemps(path.join(ctx.cacheDir, "images", "layers"));
  return buildLayer(ctx, unit);
}
