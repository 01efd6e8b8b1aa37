import { SandboxError, VmmExitedError } from "../errors.js";
import type { VmmProcess } from "./vmm-process.js";

/** Races a step against the VMM's exit, so a QEMU that dies mid-step fails the step at once. */
export async function whileAlive<T>(proc: VmmProcess, step: Promise<T>, what: string): Promise<T> {
  const died = proc.exited.then((exit) => {
    throw new VmmExitedError(`QEMU exited during ${what} (${exit.reason}): ${tail(exit.vmmStderrTail, 3) || tail(exit.consoleTail, 3) || "no output"}`);
  });
  return Promise.race([step, died]);
}

/**
 * Ends a VMM a step failed on and says what it left behind: how it ended, and the tails of its stderr
 * and of the guest console. A QEMU that dies shows first as a broken socket (QMP `read ECONNRESET` or a
 * closed connection) before its exit is reaped, and that alone does not say why it died.
 */
export async function endWithReport(proc: VmmProcess, reason: string): Promise<string> {
  await proc.kill(reason);
  const exit = await proc.exited;
  const ended = exit.signal ? `killed by ${exit.signal}` : `exited with code ${exit.code}`;
  // A QEMU the gateway ended says why (a kill may be recorded for a QEMU that had already exited, so
  // only a SIGKILL counts as the gateway's).
  const ours = exit.signal === "SIGKILL" && !exit.reason.startsWith("QEMU ");
  const why = !ours ? "" : exit.reason === reason ? " by the gateway after the failure" : ` by the gateway (${exit.reason})`;
  const parts = [`QEMU ${ended}${why}`];
  const stderr = tail(exit.vmmStderrTail);
  const guest = tail(exit.consoleTail);
  parts.push(`QEMU stderr: ${stderr || "(empty)"}`);
  if (guest) parts.push(`console: ${guest}`);
  return parts.join("; ");
}

/** The last `lines` non-blank lines of `text`, at most ~`chars` characters, on one line. */
export function tail(text: string, lines = 8, chars = 1024): string {
  const joined = text.trim().split("\n").slice(-lines).map((l) => l.trim()).filter(Boolean).join(" | ");
  return joined.length > chars ? `…${joined.slice(-chars)}` : joined;
}

/** `err` with what the VMM left behind appended; the same class, so callers still see which step failed. */
export function withReport(
  err: unknown,
  report: string,
  fallback: new (message: string, options?: { cause?: unknown }) => SandboxError,
): SandboxError {
  if (!(err instanceof SandboxError)) return new fallback(`${messageOf(err)} (${report})`, { cause: err });
  err.message = `${err.message} (${report})`;
  return err;
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
