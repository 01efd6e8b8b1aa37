import type { Duplex } from "node:stream";
import type { JsonRpcMessage } from "../../sandbox/agent/protocol.js";

export type Accel = "kvm" | "tcg";

/** The guest's disks and boot files, all content-addressed artefacts of the image build. */
export interface VmImage {
  kernelPath: string;
  initrdPath: string;
  rootfsPath: string;
  layerPath: string;
}

export interface VmSpec {
  image: VmImage;
  memoryMiB: number;
  vcpus: number;
  accel: Accel;
  /** Run node in the guest with --jitless: under TCG fewer code pages need retranslating after resume. */
  jitless: boolean;
  /** Extra kernel command-line words the image build computed for this host (e.g. tsc_early_khz). */
  kernelArgs: string[];
  /**
   * Under KVM, a named CPU model instead of the host's own: a cluster of different machines names one
   * they all offer, so that a sandbox saved on one node resumes on another. Absent: `-cpu host`.
   */
  kvmCpu?: string;
  /**
   * The server whose egress policy serves this VM's egress port. Absent: the VM has no egress port (and,
   * like every guest, no network device).
   */
  egressServer?: string;
}

/** The host end of guests' egress ports (src/egress): the driver hands each VM's port over to it. */
export interface EgressHost {
  attach(server: string, port: Duplex, vmId: string): EgressAttachment;
}

export interface EgressAttachment {
  /** Connections opened from now on belong to this call (their spans go under its trace). */
  noteCall(traceparent: string): void;
  /** Connections open through it now. */
  openConnections(): number;
  /** The VM is gone: every connection it had is closed. */
  close(): void;
}

/** A template snapshot: guest RAM in a file plus the device state; together they are one snapshot. */
export interface SnapshotFiles {
  ramPath: string;
  statePath: string;
}

export interface VmExit {
  code: number | null;
  signal: string | null;
  /** Why the host considers the VM gone, when the host ended it. */
  reason: string;
  /** The last lines the guest printed on its console, and the VMM's own stderr. */
  consoleTail: string;
  vmmStderrTail: string;
  /** What the guest agent reported about a hosted server's exit (`server`: which one), if it did. */
  serverExit?: { server?: string; code: number | null; signal: string | null; stderrTail: string };
}

/** MCP messages to and from the servers inside the guest, unchanged, each tagged with its server's name. */
export interface GuestChannel {
  send(server: string, message: JsonRpcMessage): void;
  /** `guestMs`, on responses: the time the server took inside the guest, when the agent measured it. */
  onMessage(listener: (server: string, message: JsonRpcMessage, guestMs?: number) => void): () => void;
  ping(timeoutMs: number): Promise<{ serverAlive: boolean; uptimeMs: number; stderrTail: string }>;
}

/** One server's messages on a guest channel: what the MCP preparation of a template speaks over. */
export interface ServerChannel {
  send(message: JsonRpcMessage): void;
  onMessage(listener: (message: JsonRpcMessage, guestMs?: number) => void): () => void;
}

export function serverChannel(channel: GuestChannel, server: string): ServerChannel {
  return {
    send: (message) => channel.send(server, message),
    onMessage: (listener) =>
      channel.onMessage((from, message, guestMs) => {
        if (from === server) listener(message, guestMs);
      }),
  };
}

/** A running guest. */
export interface Vm {
  readonly id: string;
  readonly pid: number;
  readonly channel: GuestChannel;
  /** Its egress port's host end, when its spec has one. */
  readonly egress?: EgressAttachment;
  /** Resolves once the VM has ended, however it ended. */
  readonly exited: Promise<VmExit>;
  /** Ends the VM at once; resolves when the VMM process is gone. Idempotent. */
  kill(reason: string): Promise<void>;
  /**
   * Stops its vCPUs: an idle guest then costs the host no CPU (no timer ticks to emulate). Messages
   * sent meanwhile wait in the channel. Idempotent.
   */
  freeze(): Promise<void>;
  /** Its vCPUs are stopped (frozen and not thawed since). */
  readonly frozen: boolean;
  /** Processes its servers started that still run (background jobs); a guest with any is not frozen. */
  childProcesses(timeoutMs: number): Promise<number>;
  /** Runs its vCPUs again, and sets the guest clock (it stood still while frozen) before any message. */
  thaw(): Promise<void>;
}

/** A cold-booted VM. Resumed clones have no kernel release of their own to report: they are the template's. */
export interface BootedVm extends Vm {
  /** Guest kernel release, as the agent reported it at boot. */
  readonly kernelRelease: string;
}

/** A VMM process started ahead of demand, waiting for a snapshot to load. */
export interface PendingVm {
  readonly id: string;
  readonly pid: number;
  readonly exited: Promise<VmExit>;
  kill(reason: string): Promise<void>;
}

/**
 * What the sandbox layer needs from a virtual machine monitor. It deals in VMs, snapshots and a byte
 * channel to the guest agent; it knows nothing of MCP beyond carrying its messages.
 */
export interface SandboxDriver {
  readonly name: string;
  /** Cold-boots a guest whose RAM lives in `ramPath` (shared with the file), and waits for the agent. */
  boot(spec: VmSpec, ramPath: string, timeoutMs: number): Promise<BootedVm>;
  /** Pauses the VM and saves its device state to `statePath`; the VM is ended afterwards. */
  snapshot(vm: Vm, statePath: string): Promise<void>;
  /** Starts a VMM that will load `snapshot` into a private copy-on-write view of its RAM. */
  prestart(spec: VmSpec, snapshot: SnapshotFiles): Promise<PendingVm>;
  /**
   * Loads the snapshot into a prestarted VMM, runs it, and completes the agent's resume handshake. With
   * `suspendedState`, it loads that (a clone saved by `suspend`) on top of the template instead.
   */
  resume(pending: PendingVm, timeoutMs: number, suspendedState?: string): Promise<Vm>;
  /**
   * Saves a running clone to `statePath` (only what it changed against its template) and ends its VM.
   * On failure the VM keeps running and the error is thrown.
   */
  suspend(vm: Vm, statePath: string): Promise<{ bytes: number; pages: number }>;
  /** Identifies the VMM build and the guest machine it emulates, for snapshot invalidation. */
  version(): Promise<string>;
}
