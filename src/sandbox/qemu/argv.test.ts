import assert from "node:assert/strict";
import { test } from "node:test";
import type { VmSpec } from "../driver.js";
import { qemuArgs, TCG_CPU } from "./argv.js";

const spec = (extra: Partial<VmSpec>): VmSpec => ({
  image: { kernelPath: "/k", initrdPath: "/i", rootfsPath: "/r", layerPath: "/l" },
  memoryMiB: 256,
  vcpus: 1,
  accel: "kvm",
  jitless: false,
  kernelArgs: [],
  ...extra,
});
const files = { kernel: "/fd/3", initrd: "/fd/4", rootfs: "/fd/5", layer: "/fd/6", ram: "/fd/7" };
const cpuOf = (args: string[]) => args[args.indexOf("-cpu") + 1];

test("the guest CPU: the host's under KVM, a cluster's named model when set, TCG's own model otherwise", () => {
  assert.equal(cpuOf(qemuArgs({ spec: spec({}), files, ramShared: false, incoming: true })), "host");
  assert.equal(cpuOf(qemuArgs({ spec: spec({ kvmCpu: "Skylake-Server-v4" }), files, ramShared: false, incoming: true })), "Skylake-Server-v4");
  assert.equal(cpuOf(qemuArgs({ spec: spec({ accel: "tcg", kvmCpu: "Skylake-Server-v4" }), files, ramShared: false, incoming: true })), TCG_CPU);
});
