/**
 * The hosted MCP server as a child process: spawn from the layer's spec, newline-delimited JSON-RPC on
 * its stdio, the tail of its stderr kept for diagnostics.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import type { EgressSpec } from "./egress-protocol.js";
import { MAX_FRAME_BYTES, STDERR_TAIL_BYTES, type JsonRpcMessage } from "./protocol.js";
import { ResyncingDecoder } from "./resync-decoder.js";

export interface ServerSpec {
  /** The manifest's name: what the host tags this server's `mcp` frames with. */
  name: string;
  command: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
}

/** What a guest runs: its servers (one, or the members of a shared sandbox) and their egress. */
export interface GuestSpec {
  servers: ServerSpec[];
  /** Present when a server's manifest grants `network`: the agent carries its connections. */
  egress?: EgressSpec;
}

/** Reads and checks /srv/.mcpvisor/guest.json (written by sandbox/image/layer.ts). */
export function loadGuestSpec(file: string): GuestSpec {
  const raw: unknown = JSON.parse(fs.readFileSync(file, "utf8"));
  if (typeof raw !== "object" || raw === null) throw new Error(`${file}: not a JSON object`);
  const o = raw as Record<string, unknown>;
  if (!Array.isArray(o.servers) || o.servers.length === 0) throw new Error(`${file}: "servers" must be a non-empty array`);
  const servers = o.servers.map((entry: unknown, i) => serverSpecOf(entry, `${file}: servers[${i}]`));
  if (new Set(servers.map((s) => s.name)).size !== servers.length) throw new Error(`${file}: two servers share a name`);
  const spec: GuestSpec = { servers };
  if (o.egress !== undefined) {
    const ports = (o.egress as { ports?: unknown }).ports;
    if (!Array.isArray(ports) || !ports.every((p) => Number.isInteger(p) && p > 0 && p < 65536)) {
      throw new Error(`${file}: "egress.ports" must be an array of port numbers`);
    }
    spec.egress = { ports: ports as number[] };
  }
  return spec;
}

function serverSpecOf(raw: unknown, where: string): ServerSpec {
  if (typeof raw !== "object" || raw === null) throw new Error(`${where}: not a JSON object`);
  const o = raw as Record<string, unknown>;
  if (typeof o.name !== "string" || o.name === "") throw new Error(`${where}: "name" must be a string`);
  if (typeof o.command !== "string" || o.command === "") throw new Error(`${where}: "command" must be a string`);
  const args = o.args ?? [];
  if (!Array.isArray(args) || !args.every((a) => typeof a === "string")) {
    throw new Error(`${where}: "args" must be an array of strings`);
  }
  const env = o.env ?? {};
  if (typeof env !== "object" || env === null || !Object.values(env).every((v) => typeof v === "string")) {
    throw new Error(`${where}: "env" must map names to strings`);
  }
  const cwd = o.cwd ?? "/srv";
  if (typeof cwd !== "string") throw new Error(`${where}: "cwd" must be a string`);
  return { name: o.name, command: o.command, args: args as string[], env: env as Record<string, string>, cwd };
}

/** `node` means the guest's own node binary; under TCG `--jitless` cuts what must be re-translated. */
export function resolveCommand(spec: ServerSpec, jitless: boolean): { file: string; args: string[] } {
  if (spec.command === "node") {
    return { file: process.execPath, args: jitless ? ["--jitless", ...spec.args] : [...spec.args] };
  }
  return { file: spec.command, args: [...spec.args] };
}

export interface HostedServerEvents {
  message(msg: JsonRpcMessage): void;
  /** A stdout line that is not a JSON object, or one too long: reported, never fatal. */
  badOutput(description: string): void;
  /** The process is gone and its stdout is drained (or a spawn error: code and signal null). */
  exit(code: number | null, signal: string | null, error?: Error): void;
}

/** Keeps the last `limit` bytes written to it. */
export class TailBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly limit = STDERR_TAIL_BYTES) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.chunks.length > 1 && this.size - this.chunks[0]!.length >= this.limit) {
      this.size -= this.chunks.shift()!.length;
    }
    if (this.chunks.length > 8) this.compact();
  }

  private compact(): void {
    const all = Buffer.concat(this.chunks);
    const kept = all.subarray(Math.max(0, all.length - this.limit));
    this.chunks = [Buffer.from(kept)];
    this.size = kept.length;
  }

  toString(): string {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - this.limit)).toString("utf8");
  }
}

export class HostedServer {
  readonly stderrTail = new TailBuffer();
  private child: ChildProcess | null = null;
  private alive = false;
  private exited = false;

  constructor(private readonly events: HostedServerEvents) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  isAlive(): boolean {
    return this.alive;
  }

  /** Returns the pid, or undefined if the spawn failed (the `exit` event then reports why). */
  start(spec: ServerSpec, jitless: boolean): number | undefined {
    const { file, args } = resolveCommand(spec, jitless);
    const child = spawn(file, args, {
      cwd: spec.cwd,
      // The guest's stage 2 gives a minimal environment; the manifest's env goes on top.
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp", ...spec.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.child = child;
    this.alive = child.pid !== undefined;

    const decoder = new ResyncingDecoder();
    child.stdout!.on("data", (chunk: Buffer) => {
      const { frames: lines, dropped } = decoder.push(chunk);
      if (dropped) this.events.badOutput(`server stdout line longer than ${MAX_FRAME_BYTES} bytes dropped`);
      for (const line of lines) {
        if (typeof line === "object" && line !== null && !Array.isArray(line)) {
          const obj = line as Record<string, unknown>;
          if (obj.t === "unparsable" && typeof obj.line === "string" && !("jsonrpc" in obj)) {
            this.events.badOutput(`server wrote a non-JSON stdout line: ${obj.line}`);
          } else {
            this.events.message(obj);
          }
        } else {
          this.events.badOutput(`server wrote a stdout line that is not a JSON object: ${JSON.stringify(line).slice(0, 200)}`);
        }
      }
    });
    child.stderr!.on("data", (chunk: Buffer) => this.stderrTail.push(chunk));
    // EPIPE on a dead server's stdin surfaces here; the exit event reports the death itself.
    child.stdin!.on("error", () => {});

    let exitInfo: { code: number | null; signal: string | null } | null = null;
    const finish = (error?: Error) => {
      if (this.exited) return;
      this.exited = true;
      this.alive = false;
      this.events.exit(exitInfo?.code ?? null, exitInfo?.signal ?? null, error);
    };
    child.on("error", (err) => {
      // Spawn failure (ENOENT, EACCES): there will be no exit event with a code.
      if (!this.alive || child.exitCode !== null) finish(err);
    });
    child.on("exit", (code, signal) => {
      exitInfo = { code, signal };
      this.alive = false;
      // A grandchild holding stdout open must not keep the exit report back forever.
      setTimeout(() => finish(), 500).unref();
    });
    child.on("close", () => finish());
    return child.pid;
  }

  /** Writes one JSON-RPC message as a line; resolves when the pipe accepted it (backpressure). */
  send(msg: JsonRpcMessage): Promise<boolean> {
    const stdin = this.child?.stdin;
    if (!this.alive || !stdin || stdin.destroyed) return Promise.resolve(false);
    return new Promise((resolve) => {
      const ok = stdin.write(JSON.stringify(msg) + "\n");
      if (ok) return resolve(true);
      const done = () => {
        stdin.off("drain", done);
        stdin.off("close", done);
        resolve(true);
      };
      stdin.on("drain", done);
      stdin.on("close", done);
    });
  }

  /** Backpressure from the host channel: stop reading the server's stdout for a while. */
  pauseOutput(): void {
    this.child?.stdout?.pause();
  }

  resumeOutput(): void {
    this.child?.stdout?.resume();
  }

  kill(signal: NodeJS.Signals = "SIGTERM"): void {
    this.child?.kill(signal);
  }
}
