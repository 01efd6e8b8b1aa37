import { EGRESS_PORT_NAME } from "../../../sandbox/agent/egress-protocol.js";
import { AGENT_PORT_NAME } from "../../../sandbox/agent/protocol.js";
import type { VmSpec } from "../driver.js";
import { AGENT_FD, EGRESS_FD, QMP_FD, type VmmFiles } from "./vmm-process.js";

export interface QemuLaunch {
  spec: VmSpec;
  /** Where QEMU finds its files: the /proc/self/fd paths VmmProcess.start hands over, not spec.image's. */
  files: VmmFiles;
  /** share=on for a template boot (the file is the snapshot's RAM); off for clones (private CoW). */
  ramShared: boolean;
  /** Wait for `migrate-incoming` instead of booting. */
  incoming: boolean;
  /** TCG translation cache size; QEMU's default is 1 GiB per process, too much for many clones. */
  tcgTbSizeMiB?: number;
  /** Extra kernel command-line words, e.g. `mcpvisor.probe=1` for the accelerator probe boot. */
  cmdlineExtra?: string[];
}

/**
 * QEMU's seccomp filter: besides the default deny list, no setuid/setgid/capability changes, no fork or
 * exec (so no `exec:` migration URI either), no scheduler or priority changes, no obsolete syscalls.
 */
export const QEMU_SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/**
 * The guest CPU under TCG. QEMU's default model lacks ARAT (an APIC timer that keeps running in deep
 * idle), and without it, or without a high-resolution clocksource (`tsc=reliable` below), Linux never
 * leaves its periodic 250 Hz tick: every idle guest then costs the host CPU to emulate 250 timer
 * interrupts a second. With both the guest is tickless when idle (docs/design/run-gate.md, measured).
 * Under KVM `-cpu host` (or the named model of a cluster, `kvmCpu`) has ARAT and kvm-clock.
 */
export const TCG_CPU = "qemu64,+arat";

/**
 * The QEMU command line for a microvm guest. The device list must be identical between the template
 * boot and every clone, since a migration stream only loads into the same machine. Nothing of the host's
 * filesystem reaches the guest: no 9p, virtiofs or shared folder, only two read-only disk images. No guest has a network device: egress, when granted, is a
 * second virtio-serial port the gateway carries connections over (docs/design/egress.md).
 */
export function qemuArgs(launch: QemuLaunch): string[] {
  const { spec } = launch;
  const tcg = spec.accel !== "kvm";
  const cmdline = [
    "console=ttyS0", "quiet", "panic=-1",
    spec.jitless ? "mcpvisor.jitless=1" : "",
    // See TCG_CPU: TCG's TSC follows the host clock, so the watchdog that would distrust it is not needed.
    tcg ? "tsc=reliable" : "",
    ...spec.kernelArgs, ...(launch.cmdlineExtra ?? []),
  ].filter(Boolean);
  const accel = tcg ? ["-accel", `tcg,tb-size=${launch.tcgTbSizeMiB ?? 128}`, "-cpu", TCG_CPU] : ["-accel", "kvm", "-cpu", spec.kvmCpu ?? "host"];
  return [
    // Thread names (CPU 0/TCG, IO mon_iothread…) in /proc and top: where a VM's host CPU goes.
    "-name", "mcpvisor,debug-threads=on",
    "-M", "microvm,acpi=on,memory-backend=mem",
    ...accel,
    "-m", `${spec.memoryMiB}M`,
    "-smp", String(spec.vcpus),
    "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-no-reboot",
    "-sandbox", QEMU_SANDBOX,
    "-object", `memory-backend-file,id=mem,size=${spec.memoryMiB}M,mem-path=${launch.files.ram},share=${launch.ramShared ? "on" : "off"}`,
    "-kernel", launch.files.kernel,
    "-initrd", launch.files.initrd,
    "-append", cmdline.join(" "),
    "-serial", "stdio",
    "-drive", `file=${launch.files.rootfs},format=raw,if=none,id=base,readonly=on`,
    "-device", "virtio-blk-device,drive=base",
    "-drive", `file=${launch.files.layer},format=raw,if=none,id=srv,readonly=on`,
    "-device", "virtio-blk-device,drive=srv",
    "-object", "rng-random,id=rng,filename=/dev/urandom",
    "-device", "virtio-rng-device,rng=rng",
    "-device", "virtio-serial-device",
    "-chardev", `socket,id=agent,fd=${AGENT_FD}`,
    "-device", `virtserialport,chardev=agent,name=${AGENT_PORT_NAME}`,
    ...(spec.egressServer ? ["-chardev", `socket,id=egress,fd=${EGRESS_FD}`, "-device", `virtserialport,chardev=egress,name=${EGRESS_PORT_NAME}`] : []),
    "-chardev", `socket,id=qmp,fd=${QMP_FD}`,
    "-mon", "chardev=qmp,mode=control",
    ...(launch.incoming ? ["-incoming", "defer"] : []),
  ];
}
