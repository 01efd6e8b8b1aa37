import assert from "node:assert/strict";
import { test } from "node:test";
import { ServerManifestSchema } from "./manifest.js";
import { sandboxUnits } from "./sandbox-unit.js";

const manifest = (name: string, extra: Record<string, unknown> = {}) =>
  ServerManifestSchema.parse({ name, source: { kind: "bundle", entry: "x.ts" }, command: "node", ...extra });

test("servers naming one sandbox form one unit, merged to the most any member asks for", () => {
  const units = sandboxUnits(
    [
      manifest("exec", { sandbox: "workspace", guest: { memoryMiB: 512, python: true, workspaceMiB: 256 }, timeouts: { idleSuspendMs: 90_000, callMs: 125_000 } }),
      manifest("memory"),
      manifest("filesystem", { sandbox: "workspace", guest: { memoryMiB: 384, vcpus: 2 }, pool: { prestarted: 1, warm: 2 }, timeouts: { idleSuspendMs: 60_000 } }),
    ],
    "/srv/servers",
  );
  assert.deepEqual(units.map((u) => [u.name, u.members.map((m) => m.name)]), [["workspace", ["exec", "filesystem"]], ["memory", ["memory"]]]);
  const workspace = units[0]!;
  assert.deepEqual(workspace.guest, { memoryMiB: 512, vcpus: 2, python: true, workspaceMiB: 256, freezeWhenIdle: true });
  assert.deepEqual(workspace.pool, { prestarted: 2, warm: 2 });
  assert.equal(workspace.timeouts.idleSuspendMs, 60_000, "the shortest idle time");
});

test("one member that never suspends, or must not be frozen, keeps the whole shared sandbox running", () => {
  const [unit] = sandboxUnits([manifest("a", { sandbox: "ws" }), manifest("b", { sandbox: "ws", timeouts: { idleSuspendMs: 0 }, guest: { freezeWhenIdle: false } })], "d");
  assert.equal(unit!.timeouts.idleSuspendMs, 0);
  assert.equal(unit!.guest.freezeWhenIdle, false);
});

test("what cannot be merged is refused, naming the files and the field", () => {
  const refuse = (manifests: ReturnType<typeof manifest>[], message: RegExp) => assert.throws(() => sandboxUnits(manifests, "/etc/mcpvisor/servers"), { code: "CONFIG_INVALID", message });
  refuse([manifest("a", { sandbox: "ws" }), manifest("b", { sandbox: "ws", isolation: "call" })], /\/etc\/mcpvisor\/servers\/b\.json: isolation: .*'ws' must keep `session` isolation/);
  refuse(
    [manifest("a", { sandbox: "ws", network: { allow: ["host.internal:5432"] } }), manifest("b", { sandbox: "ws", network: { allow: ["public:443"] } })],
    /servers\/a\.json and .*servers\/b\.json: network: only one server of the shared sandbox 'ws'/,
  );
  refuse([manifest("a", { sandbox: "b" }), manifest("b")], /servers\/a\.json: sandbox: 'b' is also a server's name/);
  refuse([manifest("a", { guest: { memoryMiB: 256, workspaceMiB: 200 } })], /servers\/a\.json: guest\.workspaceMiB: 200 MiB of \/workspace needs guest\.memoryMiB of at least 328/);
});

test("a server alone keeps its own name and settings", () => {
  const [unit] = sandboxUnits([manifest("time", { network: { allow: ["public:443"] } })], "d");
  assert.equal(unit!.name, "time");
  assert.equal(unit!.networked?.name, "time");
  assert.deepEqual(unit!.guest, { memoryMiB: 256, vcpus: 1, python: false, workspaceMiB: 64, freezeWhenIdle: true });
});
