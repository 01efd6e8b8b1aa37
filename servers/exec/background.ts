/**
 * Background processes: a dev server or a watch a command leaves running between calls. Each is a
 * process group of its own, started by `run` with `background: true`; `output` reads what it wrote since
 * the last read, `stop` ends the group. Bounded in number, and in what each keeps unread.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { CHILD_ENV, WORK_DIR } from "./limits.js";

/** Background processes at once in one sandbox. */
export const MAX_BACKGROUND = 8;
/** Unread output kept per stream; older bytes are dropped (and counted) when a reader falls behind. */
export const BACKGROUND_BUFFER_BYTES = 256 * 1024;

export class BackgroundError extends Error {}

/** The unread tail of one stream. */
class Unread {
  private chunks: Buffer[] = [];
  private size = 0;
  dropped = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size > BACKGROUND_BUFFER_BYTES && this.chunks.length) {
      const first = this.chunks[0]!;
      const excess = this.size - BACKGROUND_BUFFER_BYTES;
      if (first.length <= excess) {
        this.chunks.shift();
        this.size -= first.length;
        this.dropped += first.length;
      } else {
        this.chunks[0] = first.subarray(excess);
        this.size -= excess;
        this.dropped += excess;
      }
    }
  }

  take(): { text: string; dropped: number } {
    const text = Buffer.concat(this.chunks).toString("utf8");
    const dropped = this.dropped;
    this.chunks = [];
    this.size = 0;
    this.dropped = 0;
    return { text, dropped };
  }
}

interface Job {
  id: number;
  command: string;
  child: ChildProcess;
  stdout: Unread;
  stderr: Unread;
  exit?: { code: number | null; signal: string | null };
  exited: Promise<void>;
}

export interface JobOutput {
  id: number;
  command: string;
  running: boolean;
  exitCode: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** Bytes written but dropped before they were read (past BACKGROUND_BUFFER_BYTES unread). */
  droppedBytes: number;
}

export class BackgroundJobs {
  private readonly jobs = new Map<number, Job>();
  private nextId = 1;

  start(command: string): { id: number; pid: number } {
    const running = [...this.jobs.values()].filter((j) => !j.exit).length;
    if (running >= MAX_BACKGROUND) {
      throw new BackgroundError(`${running} background processes are running, the most a sandbox may have (${MAX_BACKGROUND}); stop one first`);
    }
    const child = spawn("/bin/sh", ["-c", command], { cwd: WORK_DIR, env: CHILD_ENV, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    const job: Job = {
      id: this.nextId++,
      command,
      child,
      stdout: new Unread(),
      stderr: new Unread(),
      exited: new Promise((resolve) => child.once("close", () => resolve())),
    };
    child.stdout!.on("data", (c: Buffer) => job.stdout.push(c));
    child.stderr!.on("data", (c: Buffer) => job.stderr.push(c));
    child.once("exit", (code, signal) => (job.exit = { code, signal }));
    child.once("error", (err) => {
      job.exit = { code: null, signal: null };
      job.stderr.push(Buffer.from(`cannot start: ${err.message}\n`));
    });
    this.jobs.set(job.id, job);
    // Finished jobs are kept for a last read, then forgotten: at most MAX_BACKGROUND of them.
    const finished = [...this.jobs.values()].filter((j) => j.exit);
    for (const old of finished.slice(0, Math.max(0, finished.length - MAX_BACKGROUND))) this.jobs.delete(old.id);
    return { id: job.id, pid: child.pid ?? -1 };
  }

  output(id: number): JobOutput {
    const job = this.get(id);
    const out = job.stdout.take();
    const err = job.stderr.take();
    return {
      id,
      command: job.command,
      running: !job.exit,
      exitCode: job.exit?.code ?? null,
      signal: job.exit?.signal ?? null,
      stdout: out.text,
      stderr: err.text,
      droppedBytes: out.dropped + err.dropped,
    };
  }

  /** Ends the job's whole process group (SIGTERM, then SIGKILL after `graceMs`) and returns what it left. */
  async stop(id: number, graceMs = 2_000): Promise<JobOutput> {
    const job = this.get(id);
    if (!job.exit) {
      signalGroup(job.child, "SIGTERM");
      const killed = setTimeout(() => signalGroup(job.child, "SIGKILL"), graceMs);
      await job.exited;
      clearTimeout(killed);
    }
    signalGroup(job.child, "SIGKILL"); // whatever of the group outlived its leader
    return this.output(id);
  }

  private get(id: number): Job {
    const job = this.jobs.get(id);
    if (!job) throw new BackgroundError(`no background process ${id} (running: ${[...this.jobs.keys()].join(", ") || "none"})`);
    return job;
  }
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // ESRCH: already gone.
  }
}
