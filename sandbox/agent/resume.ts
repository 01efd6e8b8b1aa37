/**
 * After a snapshot resume: set the guest clock from the host and reseed the kernel CRNG, so clones of one
 * template share neither time nor random state. The privileged work is a tiny static C helper
 * (sandbox/image/guest/resume-helper.c).
 *
 * The agent starts the helper once, at boot, in `--serve` mode: it is then part of the template snapshot,
 * and a resume costs one pipe round trip. Spawning it per resume (fork of node's big address space plus
 * exec) measured 18 ms warm and ~80 ms right after boot under TCG; that one-shot mode
 * (`resume-helper <epoch_ms>` with the seed on stdin) remains the fallback if the server process is gone.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";

export const DEFAULT_RESUME_HELPER = "/usr/libexec/mcpvisor/resume-helper";
const TIMEOUT_MS = 5_000;

export interface ResumeResult {
  reseeded: boolean;
  error?: string;
}

export class ResumeHelper {
  private server: ChildProcessWithoutNullStreams | null = null;
  private pending: ((line: string | null) => void) | null = null;
  private buffered = "";

  constructor(private readonly helper: string) {}

  /** Starts the persistent helper; failures are silent here and show up as the one-shot fallback. */
  start(): void {
    let child: ChildProcessWithoutNullStreams;
    try {
      child = spawn(this.helper, ["--serve"], { stdio: ["pipe", "pipe", "pipe"] });
    } catch {
      return;
    }
    this.server = child;
    child.stdin.on("error", () => {});
    child.stderr.resume();
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      this.buffered += chunk;
      for (let nl = this.buffered.indexOf("\n"); nl !== -1; nl = this.buffered.indexOf("\n")) {
        const line = this.buffered.slice(0, nl);
        this.buffered = this.buffered.slice(nl + 1);
        const p = this.pending;
        this.pending = null;
        p?.(line);
      }
      if (this.buffered.length > 4096) this.buffered = ""; // a helper gone mad must not grow us
    });
    const gone = () => {
      if (this.server === child) this.server = null;
      const p = this.pending;
      this.pending = null;
      p?.(null);
    };
    child.on("error", gone);
    child.on("exit", gone);
  }

  /** Callers serialise (the agent handles frames in order), so at most one request is in flight. */
  async resume(timeMs: number, seed: Buffer): Promise<ResumeResult> {
    const server = this.server;
    if (server && !this.pending) {
      const answer = await new Promise<string | null>((resolve) => {
        const timer = setTimeout(() => {
          this.pending = null;
          server.kill("SIGKILL");
          resolve(null);
        }, TIMEOUT_MS);
        this.pending = (line) => {
          clearTimeout(timer);
          resolve(line);
        };
        server.stdin.write(`${Math.trunc(timeMs)} ${seed.toString("hex")}\n`);
      });
      if (answer === "ok") return { reseeded: true };
      if (answer !== null) return { reseeded: false, error: `resume helper: ${answer}` };
      // The server died or hung: fall through to a one-shot run.
    }
    return runResumeHelperOnce(this.helper, timeMs, seed);
  }

  stop(): void {
    this.server?.stdin.end();
  }
}

export function runResumeHelperOnce(helper: string, timeMs: number, seed: Buffer): Promise<ResumeResult> {
  return new Promise((resolve) => {
    let stderr = "";
    let settled = false;
    const settle = (r: ResumeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const child = spawn(helper, [String(Math.trunc(timeMs))], { stdio: ["pipe", "ignore", "pipe"] });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      settle({ reseeded: false, error: `resume helper timed out after ${TIMEOUT_MS} ms` });
    }, TIMEOUT_MS);
    child.stderr.on("data", (c: Buffer) => {
      if (stderr.length < 4096) stderr += c.toString("utf8");
    });
    child.stdin.on("error", () => {});
    child.on("error", (err) => settle({ reseeded: false, error: `resume helper: ${err.message}` }));
    child.on("close", (code, signal) => {
      if (code === 0) settle({ reseeded: true });
      else settle({ reseeded: false, error: `resume helper exited ${code ?? signal}: ${stderr.trim()}` });
    });
    child.stdin.end(seed);
  });
}
