import { spawn } from "node:child_process";
import { performance } from "node:perf_hooks";
import { CappedOutput } from "./capped-output.js";
import { CHILD_ENV, OUTPUT_CAP_BYTES, WORK_DIR } from "./limits.js";

export interface ProcessSpec {
  file: string;
  args: readonly string[];
  /** Written to the child's stdin, which is then closed (also when absent, so readers see EOF). */
  stdin?: string | undefined;
  timeoutMs: number;
  /** Each chunk of output as it comes (for progress notifications); the result still holds it all. */
  onOutput?: (chunk: Buffer) => void;
}

export type RunResult = {
  stdout: string;
  stderr: string;
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  truncated: boolean;
  durationMs: number;
};

/** After the main process exits, how long its pipes may stay open: something that left the process group
 * (setsid) could hold them forever. */
const DRAIN_GRACE_MS = 250;

/** Runs one process in its own process group, with a deadline for the whole group and capped output.
 * Rejects only when the process cannot be started. */
export function runProcess(spec: ProcessSpec): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    // detached: the child leads a new session and process group, so one kill(-pid) reaches its descendants.
    const child = spawn(spec.file, spec.args, { cwd: WORK_DIR, env: CHILD_ENV, detached: true, stdio: "pipe" });
    const stdout = new CappedOutput(OUTPUT_CAP_BYTES);
    const stderr = new CappedOutput(OUTPUT_CAP_BYTES);
    child.stdout.on("data", (chunk: Buffer) => {
      stdout.push(chunk);
      spec.onOutput?.(chunk);
    });
    child.stderr.on("data", (chunk: Buffer) => {
      stderr.push(chunk);
      spec.onOutput?.(chunk);
    });
    // A child that exits without reading its input makes this write fail (EPIPE); that is not a failure of the run.
    child.stdin.on("error", () => {});
    child.stdin.end(spec.stdin ?? "");

    const killGroup = (): void => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // ESRCH: the whole group is already gone.
      }
    };

    let timedOut = false;
    let drainTimer: NodeJS.Timeout | undefined;
    const deadline = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, spec.timeoutMs);

    child.on("error", (error) => {
      clearTimeout(deadline);
      reject(error);
    });
    child.on("exit", () => {
      clearTimeout(deadline);
      // Background jobs die with the command: each call is self-contained, and they would keep the pipes open.
      killGroup();
      drainTimer = setTimeout(() => {
        child.stdout.destroy();
        child.stderr.destroy();
      }, DRAIN_GRACE_MS);
    });
    child.on("close", (exitCode, signal) => {
      clearTimeout(drainTimer);
      resolve({
        stdout: stdout.text(),
        stderr: stderr.text(),
        exitCode,
        signal,
        timedOut,
        truncated: stdout.truncated || stderr.truncated,
        durationMs: Math.round(performance.now() - started),
      });
    });
  });
}
