/**
 * Internal errors of the sandbox layer. They carry stable string codes and stay on the host; only
 * src/gateway/to-wire.ts turns them into JSON-RPC errors for clients.
 */
export type SandboxErrorCode =
  | "QMP_TIMEOUT"
  | "QMP_ERROR"
  | "VMM_START_FAILED"
  | "VMM_EXITED"
  | "GUEST_EXITED"
  | "AGENT_PROTOCOL"
  | "BOOT_TIMEOUT"
  | "RESUME_FAILED"
  | "CALL_TIMEOUT"
  | "SNAPSHOT_FAILED"
  | "SNAPSHOT_CORRUPT"
  | "TEMPLATE_FAILED"
  | "POOL_CLOSED"
  | "BUSY"
  /** The session's sandbox died while it had nothing to do: what it held is gone (told once). */
  | "STATE_LOST"
  | "ILLEGAL_TRANSITION";

export class SandboxError extends Error {
  constructor(
    readonly code: SandboxErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "SandboxError";
  }

  /** Whether retrying the same request on a fresh clone may succeed. */
  get retryable(): boolean {
    return this.code !== "CALL_TIMEOUT" && this.code !== "TEMPLATE_FAILED" && this.code !== "POOL_CLOSED";
  }
}
