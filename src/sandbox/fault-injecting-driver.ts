import { createHash } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import type { JsonRpcMessage } from "../../sandbox/agent/protocol.js";
import { writeAtomically } from "./atomic-file.js";
import type { BootedVm, GuestChannel, PendingVm, SandboxDriver, SnapshotFiles, Vm, VmExit, VmSpec } from "./driver.js";
import {
  BootTimeoutError,
  GuestExitedError,
  ResumeError,
  SandboxClosedError,
  SnapshotError,
  SuspendError,
  VmmStartError,
} from "./errors.js";

/** A spec for the fake driver, which reads nothing from it: no image files need exist. */
export const FAKE_VM_SPEC: VmSpec = {
  image: { kernelPath: "/nonexistent/kernel", initrdPath: "/nonexistent/initrd", rootfsPath: "/nonexistent/rootfs", layerPath: "/nonexistent/layer" },
  memoryMiB: 64,
  vcpus: 1,
  accel: "tcg",
  jitless: false,
  kernelArgs: [],
};

/** The driver operations a test can make fail or hold. */
export type DriverOperation = "boot" | "snapshot" | "prestart" | "resume" | "suspend";

/** What an injected failure throws when the test gives no error: the type the real driver throws. */
const DEFAULT_FAULTS: Record<DriverOperation, () => Error> = {
  boot: () => new BootTimeoutError("injected boot failure (FaultInjectingDriver)"),
  snapshot: () => new SnapshotError("injected snapshot failure (FaultInjectingDriver)"),
  prestart: () => new VmmStartError("injected prestart failure (FaultInjectingDriver)"),
  resume: () => new ResumeError("injected resume failure (FaultInjectingDriver)"),
  suspend: () => new SuspendError("injected suspend failure (FaultInjectingDriver)"),
};

/** The in-memory state of the fake guest's server: what a snapshot or a suspend saves. */
interface GuestState {
  initialized: boolean;
  notes: Record<string, string>;
}

const STATE_FORMAT = "mcpvisor-fault-injecting-driver/1";

/** The tools the fake guest's server offers. */
export const FAKE_GUEST_TOOLS = [
  {
    name: "echo",
    description: "Returns its text",
    inputSchema: { type: "object", properties: { text: { type: "string" } }, required: ["text"] },
  },
  {
    name: "remember",
    description: "Keeps a value under a key in the server's memory",
    inputSchema: { type: "object", properties: { key: { type: "string" }, value: { type: "string" } }, required: ["key", "value"] },
  },
  {
    name: "recall",
    description: "Returns the value kept under a key, or an empty text",
    inputSchema: { type: "object", properties: { key: { type: "string" } }, required: ["key"] },
  },
];

/**
 * A FAKE virtual machine monitor, for unit tests and fault injection. It isolates nothing: its "guest" is
 * a tiny MCP server running in this very process, its "VMs" are objects, their pids are negative numbers
 * that name no process (ask `isRunning`), and its snapshot files hold the server's state as JSON. It
 * follows the SandboxDriver contract as QemuDriver does (typed errors; a failed resume leaves nothing
 * running; a failed suspend leaves the VM running; kill is idempotent) and runs the same driver suite
 * (driver.case.ts), so that pool and router tests can run without an image build or QEMU.
 *
 * Faults are armed per call from the test: `failNext(op)`, `holdNext(op)` (the operation waits for its
 * release, so races such as a destroy during a suspend happen in a known order), `hangNextCall()`
 * and `crashGuest(vm)`. Each fault applies once, to the next such operation on any VM of this driver.
 */
export class FaultInjectingDriver implements SandboxDriver {
  readonly name = "fault-injecting";
  static readonly VERSION = "fault-injecting-driver 1";
  private readonly faults = new Map<DriverOperation, Error>();
  private readonly holds = new Map<DriverOperation, { gate: Promise<void>; arrived: () => void }>();
  private hangs = 0;
  private nextPid = 1;
  private readonly live = new Set<number>();

  /**
   * The next `op` fails with `error`, by default the typed error QemuDriver throws for it. As in
   * QemuDriver, a failed resume leaves no VMM behind, a failed snapshot ends the VM, a failed suspend
   * leaves it running, and resume, suspend and snapshot wrap any other error in their own type.
   */
  failNext(op: DriverOperation, error: Error = DEFAULT_FAULTS[op]()): void {
    this.faults.set(op, error);
  }

  /**
   * The next `op` stops once started, before it does anything, until `release` is called: `reached`
   * resolves when it got there, so a test can act while it waits (end the VM, start another operation).
   * Ending the VM meanwhile ends the wait, and the operation fails as the real one would on a VM that
   * went away.
   */
  holdNext(op: DriverOperation): { reached: Promise<void>; release: () => void } {
    let release!: () => void;
    let arrived!: () => void;
    const reached = new Promise<void>((resolve) => (arrived = resolve));
    this.holds.set(op, { gate: new Promise<void>((resolve) => (release = resolve)), arrived });
    return { reached, release };
  }

  /** The next `tools/call` any guest gets is never answered, as by a server stuck in a tool. */
  hangNextCall(): void {
    this.hangs++;
  }

  /**
   * The server in `vm`'s guest dies: the channel closes and `exited` resolves with a `serverExit`, as
   * when the real agent reports the server's exit and powers the guest off.
   */
  crashGuest(vm: Vm, serverExit: NonNullable<VmExit["serverExit"]> = { code: 1, signal: null, stderrTail: "injected crash" }): void {
    fakeVm(vm, "crashGuest").end({ code: 0, signal: null, reason: "guest powered off after its server exited", serverExit }, new GuestExitedError("agent channel closed"));
  }

  /** Whether the fake VMM `vm` stands for still "runs" (there is no process to look at). */
  isRunning(vm: { pid: number }): boolean {
    return this.live.has(vm.pid);
  }

  /** How many fake VMMs (pending or running) have not ended: a leak check for tests. */
  get running(): number {
    return this.live.size;
  }

  version(): Promise<string> {
    return Promise.resolve(FaultInjectingDriver.VERSION);
  }

  async boot(_spec: VmSpec, ramPath: string, _timeoutMs: number): Promise<BootedVm> {
    await this.step("boot");
    // Callers hash and size the RAM file; the fake guest keeps nothing in it.
    await writeFile(ramPath, "fault-injecting-driver: no guest RAM\n");
    return new FakeVm(this.register(), () => this.takeHang(), { initialized: false, notes: {} });
  }

  async snapshot(vm: Vm, statePath: string): Promise<void> {
    const running = fakeVm(vm, "snapshot");
    try {
      await this.step("snapshot", running);
      await saveState(running, statePath);
    } catch (err) {
      await running.kill("snapshot failed");
      throw err instanceof SnapshotError ? err : new SnapshotError(`snapshot failed: ${messageOf(err)}`, { cause: err });
    }
    await running.kill("snapshot taken");
  }

  async prestart(_spec: VmSpec, snapshot: SnapshotFiles): Promise<PendingVm> {
    await this.step("prestart");
    return new FakeVm(this.register(), () => this.takeHang(), undefined, snapshot.statePath);
  }

  async resume(pending: PendingVm, _timeoutMs: number, suspendedState?: string): Promise<Vm> {
    const vm = fakeVm(pending, "resume");
    try {
      await this.step("resume", vm); // fails a VMM that has already ended
      const state = await loadState(suspendedState ?? vm.templateState!);
      if (vm.ended) throw new Error(`the VMM ended while it loaded its state (${vm.ended.reason})`);
      vm.load(state);
      return vm;
    } catch (err) {
      await vm.kill("resume failed");
      if (err instanceof ResumeError) throw err;
      throw new ResumeError(`could not resume from ${suspendedState ? "saved state" : "snapshot"}: ${messageOf(err)}`, { cause: err });
    }
  }

  async suspend(vm: Vm, statePath: string): Promise<{ bytes: number; pages: number }> {
    const running = fakeVm(vm, "suspend");
    try {
      await this.step("suspend", running);
      const { bytes } = await saveState(running, statePath);
      await running.kill("suspended to disk");
      return { bytes, pages: 1 };
    } catch (err) {
      throw err instanceof SuspendError ? err : new SuspendError(`suspend failed: ${messageOf(err)}`, { cause: err });
    }
  }

  /** Waits out a hold, then throws an armed fault; a VM that ended meanwhile fails the step. */
  private async step(op: DriverOperation, vm?: FakeVm): Promise<void> {
    const hold = this.holds.get(op);
    if (hold) {
      this.holds.delete(op);
      hold.arrived();
      await (vm ? Promise.race([hold.gate, vm.exited]) : hold.gate);
    }
    if (vm?.ended) throw new Error(`the VM ended during ${op} (${vm.ended.reason})`);
    const fault = this.faults.get(op);
    if (fault) {
      this.faults.delete(op);
      throw fault;
    }
  }

  private register(): { pid: number; ended: () => void } {
    const pid = -this.nextPid++;
    this.live.add(pid);
    return { pid, ended: () => this.live.delete(pid) };
  }

  private takeHang(): boolean {
    if (this.hangs === 0) return false;
    this.hangs--;
    return true;
  }
}

/** One fake VMM: pending until it has a guest state, then running, until it ends. */
class FakeVm implements BootedVm, GuestChannel {
  readonly id: string;
  readonly pid: number;
  readonly kernelRelease = "fault-injecting";
  readonly exited: Promise<VmExit>;
  private resolveExit!: (exit: VmExit) => void;
  private closedError: Error | undefined;
  ended: VmExit | undefined;
  private readonly listeners = new Set<(server: string, message: JsonRpcMessage, guestMs?: number) => void>();
  private readonly startedAt = performance.now();

  constructor(
    private readonly process: { pid: number; ended: () => void },
    private readonly takeHang: () => boolean,
    private state: GuestState | undefined,
    /** For a pending VM: the template's state file it will load unless given a suspended one. */
    readonly templateState?: string,
  ) {
    this.pid = process.pid;
    this.id = `fake${-process.pid}`;
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
  }

  get channel(): GuestChannel {
    return this;
  }

  load(state: GuestState): void {
    this.state = state;
  }

  snapshotState(): GuestState {
    return structuredClone(this.guest());
  }

  end(exit: Omit<VmExit, "consoleTail" | "vmmStderrTail">, channelError: Error): void {
    if (this.ended) return;
    this.ended = { consoleTail: "", vmmStderrTail: "", ...exit };
    this.closedError = channelError;
    this.listeners.clear();
    this.process.ended();
    this.resolveExit(this.ended);
  }

  async kill(reason: string): Promise<void> {
    this.end({ code: null, signal: "SIGKILL", reason }, new SandboxClosedError("agent channel closed by the host"));
    await this.exited;
  }

  /** Every server of the guest is the same fake one, and they share its state, as servers sharing a sandbox do. */
  send(server: string, message: JsonRpcMessage): void {
    const state = this.guest();
    const deliver = () => {
      const reply = this.closedError ? undefined : answer(state, message, this.takeHang);
      if (reply) for (const listener of this.listeners) listener(server, reply);
    };
    // Answered on a later turn of the event loop, as a reply from a real guest would be; a frozen guest
    // answers nothing until it is thawed.
    setImmediate(() => (this.frozen ? this.whileFrozen.push(deliver) : deliver()));
  }

  /** Whether its vCPUs are stopped, and what it was sent meanwhile. */
  frozen = false;
  private whileFrozen: (() => void)[] = [];

  /** The fake guest starts no processes of its own. */
  async childProcesses(): Promise<number> {
    this.guest();
    return 0;
  }

  async freeze(): Promise<void> {
    this.guest();
    this.frozen = true;
  }

  async thaw(): Promise<void> {
    this.guest();
    this.frozen = false;
    for (const deliver of this.whileFrozen.splice(0)) deliver();
  }

  onMessage(listener: (server: string, message: JsonRpcMessage, guestMs?: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async ping(_timeoutMs: number): Promise<{ serverAlive: boolean; uptimeMs: number; stderrTail: string }> {
    this.guest();
    return { serverAlive: true, uptimeMs: Math.round(performance.now() - this.startedAt), stderrTail: "" };
  }

  /** The guest's state; throws, as the real channel does, once the VM ended or before it was resumed. */
  private guest(): GuestState {
    if (this.closedError) throw this.closedError;
    if (!this.state) throw new SandboxClosedError("the VM has not been resumed yet");
    return this.state;
  }
}

function fakeVm(vm: PendingVm, op: string): FakeVm {
  if (!(vm instanceof FakeVm)) throw new TypeError(`FaultInjectingDriver.${op} needs a VM it started`);
  return vm;
}

/** The fake guest's MCP server: one request or notification in, at most one response out. */
function answer(state: GuestState, message: JsonRpcMessage, takeHang: () => boolean): JsonRpcMessage | undefined {
  const { id, method } = message;
  if (typeof method !== "string" || id === undefined) {
    if (method === "notifications/initialized") state.initialized = true;
    return undefined; // a notification, or a response to a request the server never makes
  }
  const params = (message.params ?? {}) as Record<string, unknown>;
  const result = (value: unknown): JsonRpcMessage => ({ jsonrpc: "2.0", id, result: value });
  const error = (code: number, text: string): JsonRpcMessage => ({ jsonrpc: "2.0", id, error: { code, message: text } });
  switch (method) {
    case "initialize":
      return result({
        protocolVersion: params.protocolVersion ?? "2025-11-25",
        capabilities: { tools: {} },
        serverInfo: { name: "fault-injecting-guest", version: "1" },
      });
    case "ping":
      return result({});
    case "tools/list":
      return result({ tools: FAKE_GUEST_TOOLS });
    case "tools/call": {
      if (takeHang()) return undefined;
      const args = (params.arguments ?? {}) as Record<string, unknown>;
      const text = (value: string) => result({ content: [{ type: "text", text: value }] });
      switch (params.name) {
        case "echo":
          return text(String(args.text ?? ""));
        case "remember":
          state.notes[String(args.key)] = String(args.value);
          return text("ok");
        case "recall":
          return text(state.notes[String(args.key)] ?? "");
        default:
          return error(-32602, `Unknown tool: ${String(params.name)}`);
      }
    }
    default:
      return error(-32601, `Method not found: ${method}`);
  }
}

/** The guest's state with a checksum, so that a damaged file fails the resume instead of loading. */
function saveState(vm: FakeVm, statePath: string): Promise<{ bytes: number }> {
  const guest = JSON.stringify(vm.snapshotState());
  const file = JSON.stringify({ format: STATE_FORMAT, sha256: sha256(guest), guest });
  return writeAtomically(statePath, async (out) => void out.end(file));
}

async function loadState(statePath: string): Promise<GuestState> {
  const text = await readFile(statePath, "utf8");
  let file: { format?: unknown; sha256?: unknown; guest?: unknown };
  try {
    file = JSON.parse(text) as typeof file;
  } catch {
    throw new Error(`${statePath} is not a fault-injecting driver state file`);
  }
  if (file.format !== STATE_FORMAT || typeof file.guest !== "string" || file.sha256 !== sha256(file.guest)) {
    throw new Error(`${statePath} is damaged (format or checksum mismatch)`);
  }
  return JSON.parse(file.guest) as GuestState;
}

function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
