/** Running external build tools: stderr is captured into the thrown error so a failed build says why. */
import { spawn, type SpawnOptions } from "node:child_process";

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Bytes written to the command's stdin (then closed); stdin is /dev/null otherwise. */
  input?: string | Buffer;
  /** Allow these exit codes besides 0 (e.g. dpkg-query's 1 for an unknown package). */
  okCodes?: number[];
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly code: number | null,
    readonly stderr: string,
  ) {
    const tail = stderr.trim().split("\n").slice(-15).join("\n");
    super(`${command} failed (${code === null ? "killed" : `exit ${code}`})${tail ? `:\n${tail}` : ""}`);
  }
}

/** Runs `cmd args`, collecting stdout and stderr; rejects with CommandError on a non-zero exit. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const display = [cmd, ...args].join(" ");
  return new Promise((resolve, reject) => {
    const spawnOpts: SpawnOptions = {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    };
    const child = spawn(cmd, args, spawnOpts);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on("data", (c: Buffer) => out.push(c));
    child.stderr!.on("data", (c: Buffer) => err.push(c));
    child.on("error", (e) => reject(new Error(`${display}: ${e.message}`)));
    child.on("close", (code) => {
      const stdout = Buffer.concat(out).toString("utf8");
      const stderr = Buffer.concat(err).toString("utf8");
      if (code === 0 || (code !== null && opts.okCodes?.includes(code))) resolve({ code, stdout, stderr });
      else reject(new CommandError(display, code, stderr));
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
  });
}

/** True when `cmd` is on PATH. */
export async function hasCommand(cmd: string): Promise<boolean> {
  try {
    await run("sh", ["-c", `command -v "$1" >/dev/null`, "sh", cmd]);
    return true;
  } catch {
    return false;
  }
}
