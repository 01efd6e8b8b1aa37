/**
 * Internal errors of the sandbox layer, one class per failing operation, each with a stable string
 * `code` (as undici's `UND_ERR_*`). They stay on the host: only src/gateway/to-wire.ts turns them into
 * JSON-RPC errors and HTTP statuses for clients.
 */
export type SandboxErrorCode =
  | "QMP_TIMEOUT"
  | "QMP_ERROR"
  | "VMM_START_FAILED"
  | "VMM_EXITED"
  | "GUEST_EXITED"
  | "SANDBOX_CLOSED"
  | "AGENT_PROTOCOL"
  | "AGENT_TIMEOUT"
  | "BOOT_TIMEOUT"
  | "RESUME_FAILED"
  | "SUSPEND_FAILED"
  | "CALL_TIMEOUT"
  | "SNAPSHOT_FAILED"
  | "SNAPSHOT_CORRUPT"
  | "TEMPLATE_FAILED"
  | "GUEST_RPC"
  | "POOL_CLOSED"
  | "UNKNOWN_SERVER"
  | "BUSY"
  | "STATE_LOST"
  | "ILLEGAL_TRANSITION";

/** Codes after which retrying the same request on a fresh clone cannot help. */
const NOT_RETRYABLE: ReadonlySet<SandboxErrorCode> = new Set(["CALL_TIMEOUT", "TEMPLATE_FAILED", "POOL_CLOSED", "UNKNOWN_SERVER"]);

export abstract class SandboxError extends Error {
  abstract readonly code: SandboxErrorCode;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }

  /** Whether retrying the same request on a fresh clone may succeed. */
  get retryable(): boolean {
    return !NOT_RETRYABLE.has(this.code);
  }
}

/** The VMM's control socket (QMP) did not answer in time. */
export class QmpTimeoutError extends SandboxError {
  readonly code = "QMP_TIMEOUT";
}

/** The VMM refused a command, or its control socket broke. */
export class QmpError extends SandboxError {
  readonly code = "QMP_ERROR";
}

/** The VMM process could not be started (binary, user, run directory). */
export class VmmStartError extends SandboxError {
  readonly code = "VMM_START_FAILED";
}

/** The VMM process ended while the host waited on it. */
export class VmmExitedError extends SandboxError {
  readonly code = "VMM_EXITED";
}

/** The guest (or the server in it) ended without the host asking it to. */
export class GuestExitedError extends SandboxError {
  readonly code = "GUEST_EXITED";
}

/** The host ended the sandbox on purpose (its session ended, the gateway stops); work in flight is cut. */
export class SandboxClosedError extends SandboxError {
  readonly code = "SANDBOX_CLOSED";
}

/** The guest agent broke the host<->guest protocol (oversized frame, broken socket). */
export class AgentProtocolError extends SandboxError {
  readonly code = "AGENT_PROTOCOL";
}

/** The guest agent did not answer a control frame in time. */
export class AgentTimeoutError extends SandboxError {
  readonly code = "AGENT_TIMEOUT";
}

/** A cold boot did not reach the agent's hello in time. */
export class BootTimeoutError extends SandboxError {
  readonly code = "BOOT_TIMEOUT";
}

/** Loading a snapshot (the template's, or a suspended sandbox's) into a VMM failed. */
export class ResumeError extends SandboxError {
  readonly code = "RESUME_FAILED";
}

/** Saving a running sandbox to disk failed; the VM keeps running. */
export class SuspendError extends SandboxError {
  readonly code = "SUSPEND_FAILED";
}

/** Taking a template snapshot failed. */
export class SnapshotError extends SandboxError {
  readonly code = "SNAPSHOT_FAILED";
}

/** A stored snapshot does not match what was recorded when it was made (checksum, size, format). */
export class SnapshotCorruptError extends SandboxError {
  readonly code = "SNAPSHOT_CORRUPT";
}

/** A request to the guest got no answer within its deadline. */
export class CallTimeoutError extends SandboxError {
  readonly code = "CALL_TIMEOUT";
}

/** A server's template could not be built: the server cannot be hosted until that is fixed. */
export class TemplateError extends SandboxError {
  readonly code = "TEMPLATE_FAILED";
}

/** The server in the guest answered a request the host made itself with a JSON-RPC error. */
export class GuestRpcError extends SandboxError {
  readonly code = "GUEST_RPC";

  constructor(
    readonly method: string,
    readonly rpcCode: number,
    readonly rpcMessage: string,
  ) {
    super(`${method} failed in the guest: ${rpcMessage} (${rpcCode})`);
  }
}

/** The pool is closing or closed: the gateway is shutting down. */
export class PoolClosedError extends SandboxError {
  readonly code = "POOL_CLOSED";
}

/** No hosted server has this name. */
export class UnknownServerError extends SandboxError {
  readonly code = "UNKNOWN_SERVER";

  constructor(readonly server: string) {
    super(`No hosted server is named '${server}'`);
  }
}

/** Every VM the gateway may run is in use and none came free in time. */
export class BusyError extends SandboxError {
  readonly code = "BUSY";
}

/**
 * A lease's sandbox ended while it had nothing to do, so what it held (files, memory, processes) is
 * gone. Told once, to the lease's next request; the one after gets a fresh sandbox.
 */
export class SandboxLostError extends SandboxError {
  readonly code = "STATE_LOST";
}

/** A state-machine edge that the table does not allow. */
export class IllegalTransitionError extends SandboxError {
  readonly code = "ILLEGAL_TRANSITION";
}
