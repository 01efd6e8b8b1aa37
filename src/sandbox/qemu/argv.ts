import { AGENT_PORT_NAME } from "../../../sandbox/agent/protocol.js";
import type { VmSpec } from "../driver.js";

export interface QemuLaunch {
  spec: VmSpec;
  ramPath: string;
  /** share=on for a template boot (the file is the snapshot's RAM); off for clones (private CoW). */
  ramShared: boolean;
  qmpSocket: string;
  agentSocket: string;
  /** Wait for `migrate-incoming` instead of booting. */
  incoming: boolean;
  /** TCG translation cache size; QEMU's default is 1 GiB per process, too much for many clones. */
  tcgTbSizeMiB?: number;
  /** Extra kernel command-line words, e.g. `mcpvisor.probe=1` for the accelerator probe boot. */
  cmdlineExtra?: string[];
}

export const QEMU_BINARY = "qemu-system-x86_64";

/**
 * The QEMU command line for a microvm guest. The device list must be identical between the template
 * boot and every clone, since a migration stream only loads into the same machine.
 */
export function qemuArgs(launch: QemuLaunch): string[] {
  const { spec } = launch;
  const cmdline = ["console=ttyS0", "quiet", "panic=-1", spec.jitless ? "mcpvisor.jitless=1" : "", ...spec.kernelArgs, ...(launch.cmdlineExtra ?? [])].filter(Boolean);
  const accel =
    spec.accel === "kvm" ? ["-accel", "kvm", "-cpu", "host"] : ["-accel", `tcg,tb-size=${launch.tcgTbSizeMiB ?? 128}`];
  return [
    "-M", "microvm,acpi=on,memory-backend=mem",
    ...accel,
    "-m", `${spec.memoryMiB}M`,
    "-smp", String(spec.vcpus),
    "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-no-reboot",
    "-object", `memory-backend-file,id=mem,size=${spec.memoryMiB}M,mem-path=${launch.ramPath},share=${launch.ramShared ? "on" : "off"}`,
    "-kernel", spec.image.kernelPath,
    "-initrd", spec.image.initrdPath,
    "-append", cmdline.join(" "),
    "-serial", "stdio",
    "-drive", `file=${spec.image.rootfsPath},format=raw,if=none,id=base,readonly=on`,
    "-device", "virtio-blk-device,drive=base",
    "-drive", `file=${spec.image.layerPath},format=raw,if=none,id=srv,readonly=on`,
    "-device", "virtio-blk-device,drive=srv",
    "-object", "rng-random,id=rng,filename=/dev/urandom",
    "-device", "virtio-rng-device,rng=rng",
    "-device", "virtio-serial-device",
    "-chardev", `socket,id=agent,path=${launch.agentSocket},server=on,wait=off`,
    "-device", `virtserialport,chardev=agent,name=${AGENT_PORT_NAME}`,
    "-qmp", `unix:${launch.qmpSocket},server=on,wait=off`,
    ...(launch.incoming ? ["-incoming", "defer"] : []),
  ];
}
