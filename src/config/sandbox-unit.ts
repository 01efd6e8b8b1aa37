import { join } from "node:path";
import { ConfigError } from "./gateway.js";
import { needsPython, type NetworkGrant, type ServerManifest } from "./manifest.js";

/** Memory a guest keeps for its processes beside a full /workspace. */
export const MIN_PROCESS_MEMORY_MIB = 128;

/**
 * What one guest runs: a server alone, or the members of a shared sandbox (a workspace). The sandbox
 * layer builds one layer, one template and one pool per unit; the router still sees servers.
 */
export interface SandboxUnit {
  /** The pool's, template's and layer's name: the server's own, or the shared sandbox's. */
  name: string;
  /** Its servers, in manifest order. */
  members: ServerManifest[];
  guest: { memoryMiB: number; vcpus: number; python: boolean; workspaceMiB: number; freezeWhenIdle: boolean };
  pool: ServerManifest["pool"];
  timeouts: { bootMs: number; resumeMs: number; idleSuspendMs: number };
  /** The member whose `network` grant is the guest's, if one has one. */
  networked?: ServerManifest & { network: NetworkGrant };
}

/**
 * Groups servers by the sandbox they name. One guest is one trust domain, so members must agree on what
 * cannot be merged (each disagreement names the files and the field): every member keeps its session's
 * state (`isolation: "session"`), and at most one has `network` (its grant is every member's reach). The
 * rest is merged: the most memory, vCPUs, workspace, pool and boot time any member asks for, Python if any
 * needs it, the shortest idle time before a suspend, and freezing when idle only if every member allows it.
 */
export function sandboxUnits(manifests: ServerManifest[], serversDir: string): SandboxUnit[] {
  const file = (m: ServerManifest) => join(serversDir, `${m.name}.json`);
  const groups = new Map<string, ServerManifest[]>();
  for (const manifest of manifests) {
    const name = manifest.sandbox ?? manifest.name;
    if (manifest.sandbox !== undefined && manifests.some((m) => m.name === manifest.sandbox)) {
      throw new ConfigError(`${file(manifest)}: sandbox: '${manifest.sandbox}' is also a server's name; name the shared sandbox differently`);
    }
    groups.set(name, [...(groups.get(name) ?? []), manifest]);
  }
  return [...groups].map(([name, members]) => unitOf(name, members, file));
}

function unitOf(name: string, members: ServerManifest[], file: (m: ServerManifest) => string): SandboxUnit {
  const shared = members.length > 1 || members[0]!.sandbox !== undefined;
  if (shared) {
    const perCall = members.find((m) => m.isolation !== "session");
    if (perCall) {
      throw new ConfigError(`${file(perCall)}: isolation: a server in the shared sandbox '${name}' must keep \`session\` isolation (a fresh clone per call would reset its neighbours)`);
    }
  }
  const networked = members.filter((m): m is ServerManifest & { network: NetworkGrant } => m.network !== false);
  if (networked.length > 1) {
    throw new ConfigError(
      `${networked.map(file).join(" and ")}: network: only one server of the shared sandbox '${name}' may have a network grant ` +
        "(one guest is one trust domain: the grant is every member's reach); put the destinations on one of them",
    );
  }
  const max = (pick: (m: ServerManifest) => number) => Math.max(...members.map(pick));
  const guest = {
    memoryMiB: max((m) => m.guest.memoryMiB),
    vcpus: max((m) => m.guest.vcpus),
    python: members.some(needsPython),
    workspaceMiB: max((m) => m.guest.workspaceMiB),
    // One member that works between requests keeps the whole guest running.
    freezeWhenIdle: members.every((m) => m.guest.freezeWhenIdle),
  };
  if (guest.workspaceMiB + MIN_PROCESS_MEMORY_MIB > guest.memoryMiB) {
    const widest = members.find((m) => m.guest.workspaceMiB === guest.workspaceMiB)!;
    throw new ConfigError(
      `${file(widest)}: guest.workspaceMiB: ${guest.workspaceMiB} MiB of /workspace needs guest.memoryMiB of at least ` +
        `${guest.workspaceMiB + MIN_PROCESS_MEMORY_MIB} (the workspace lives in the guest's RAM), but ${shared ? `the sandbox '${name}' gets` : "it has"} ${guest.memoryMiB}`,
    );
  }
  const idle = members.map((m) => m.timeouts.idleSuspendMs).filter((ms) => ms > 0);
  return {
    name,
    members,
    guest,
    pool: { prestarted: max((m) => m.pool.prestarted), warm: max((m) => m.pool.warm) },
    timeouts: {
      bootMs: max((m) => m.timeouts.bootMs),
      resumeMs: max((m) => m.timeouts.resumeMs),
      // One member that must keep running (0: never suspend) keeps the whole guest running.
      idleSuspendMs: idle.length < members.length ? 0 : Math.min(...idle),
    },
    ...(networked[0] ? { networked: networked[0] } : {}),
  };
}
