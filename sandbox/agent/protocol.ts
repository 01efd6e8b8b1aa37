/**
 * The host <-> guest agent protocol, version 2. This file is the whole specification; the host
 * (src/sandbox/qemu/agent-channel.ts) and the guest agent (sandbox/agent/agent.ts) both import it.
 *
 * Transport: one virtio-serial port, found in the guest by its name (AGENT_PORT_NAME) under
 * /sys/class/virtio-ports/<port>/name, because the /dev/vportNpM number depends on the device list.
 *
 * Framing: newline-delimited JSON, UTF-8. One frame is one JSON object on one line, ending in "\n".
 * JSON.stringify never emits a raw newline, so no escaping is needed. A frame longer than
 * MAX_FRAME_BYTES is a protocol violation: the reader drops the connection (host side: kills the VM),
 * so a guest that floods the channel cannot exhaust the host's memory.
 *
 * Every frame has a type tag `t`. Unknown `t` values are ignored by both sides (forward compatibility);
 * a breaking change bumps AGENT_PROTOCOL_VERSION, which the agent announces in `hello`.
 *
 * A guest hosts one MCP server or several sharing it (a workspace: one filesystem, one process table);
 * each is named by its manifest's name, and every `mcp` frame carries the server it is for or from (`s`).
 *
 * Lifecycle:
 *  1. Boot: the agent opens the port, spawns every hosted MCP server (stdio), sends `hello`.
 *  2. The host speaks MCP through `mcp` frames: each carries one JSON-RPC message, forwarded unchanged
 *     to server `s`'s stdin, and each line a server writes to stdout comes back as an `mcp` frame tagged
 *     with its name. Server->client requests and notifications (sampling, elicitation, progress,
 *     logging) travel the same way; nothing is filtered.
 *  3. Snapshot: the host stops the VM between frames. Resume: after `cont` the host sends `resume` with
 *     the host's clock and fresh entropy; the agent sets the guest clock, mixes the seed into the kernel
 *     pool and forces a CRNG reseed, then answers `resumed`. Until then the clone shares the template's
 *     random state, so the host sends nothing else first.
 *  4. `ping` is answered with `pong` at any time.
 *  4b. `children` is answered with the number of processes the hosted servers started that still run
 *     (exec's background jobs): the host does not freeze a guest that has any, so they keep running.
 *  4a. Thaw: an idle guest's vCPUs are stopped (no CPU on the host) and run again when a request comes;
 *     its clock stood still meanwhile, so the host sends `clock` (time and fresh entropy, as for
 *     `resume`) before anything else. Nothing answers it: frames are handled in order, so the clock is
 *     set before the next message reaches a server. Unlike `resume`, egress connections are kept.
 *  5. If a server exits, the agent sends `exit` with its name, code, signal and the tail of its stderr,
 *     then powers the guest off (the host sees QEMU exit and reports the sandbox dead): the others'
 *     state shares the guest with it, and half a workspace is not what any session asked for.
 */

export const AGENT_PROTOCOL_VERSION = 2;
export const AGENT_PORT_NAME = "mcpvisor.agent";
export const MAX_FRAME_BYTES = 16 * 1024 * 1024;
/** How much of the server's stderr the agent keeps (the tail), for `exit` and `pong`. */
export const STDERR_TAIL_BYTES = 8 * 1024;

/** A JSON-RPC 2.0 message, opaque to the agent. */
export type JsonRpcMessage = Record<string, unknown>;

export type HostFrame =
  | { t: "mcp"; s: string; msg: JsonRpcMessage }
  | {
      t: "resume";
      id: number;
      /** Host wall clock, milliseconds since the epoch. */
      timeMs: number;
      /** Fresh random bytes from the host, base64, at least 32 bytes. */
      seed: string;
    }
  | { t: "ping"; id: number }
  | { t: "clock"; timeMs: number; seed: string }
  | { t: "children"; id: number };

export type GuestFrame =
  | {
      t: "hello";
      v: typeof AGENT_PROTOCOL_VERSION;
      /** `uname -r` of the guest kernel. */
      kernel: string;
      /** Each hosted server's pid, by name. */
      servers: Record<string, number>;
      /** Guest uptime when the agent became ready, milliseconds. */
      uptimeMs: number;
    }
  /** `guestMs`: on a response, how long the server took to answer it, measured inside the guest. */
  | { t: "mcp"; s: string; msg: JsonRpcMessage; guestMs?: number }
  | {
      t: "resumed";
      id: number;
      /** Guest clock after setting it, milliseconds since the epoch. */
      clockMs: number;
      reseeded: boolean;
    }
  /** `serverAlive`: every hosted server runs; `stderrTail`: theirs, each line led by the server's name. */
  | { t: "pong"; id: number; serverAlive: boolean; uptimeMs: number; stderrTail: string }
  | { t: "children"; id: number; count: number }
  /** `server`: the one that exited (absent when the agent could not start any). */
  | { t: "exit"; server?: string; code: number | null; signal: string | null; stderrTail: string }
  /** Something the agent could not do (a frame it could not parse, a failed reseed); informational. */
  | { t: "error"; message: string };

/**
 * One request among a guest's servers, whose ids are each their own (every client counts from 1): the
 * key both ends track requests in flight by. A string id and a number id that print alike stay apart.
 */
export function requestKey(server: string, id: string | number): string {
  return `${server}\0${typeof id}:${id}`;
}

export function encodeFrame(frame: HostFrame | GuestFrame): string {
  return JSON.stringify(frame) + "\n";
}

/**
 * Splits a byte stream into frames. Feed it chunks; it returns the complete lines' parsed objects.
 * Throws FrameTooLargeError when a line grows past MAX_FRAME_BYTES without a newline.
 */
export class FrameDecoder {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(private readonly maxFrameBytes = MAX_FRAME_BYTES) {}

  push(chunk: Buffer): unknown[] {
    const frames: unknown[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, nl);
      this.checkSize(piece.length);
      const line = this.pendingBytes
        ? Buffer.concat([...this.pending, piece]).toString("utf8")
        : piece.toString("utf8");
      this.pending = [];
      this.pendingBytes = 0;
      start = nl + 1;
      if (line.trim() === "") continue;
      frames.push(parseLine(line));
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.checkSize(rest.length);
      this.pending.push(Buffer.from(rest));
      this.pendingBytes += rest.length;
    }
    return frames;
  }

  private checkSize(extra: number): void {
    if (this.pendingBytes + extra > this.maxFrameBytes) {
      throw new FrameTooLargeError(this.maxFrameBytes);
    }
  }
}

/** A line that is not JSON comes back as this, so one bad frame does not end the stream. */
export interface UnparsableFrame {
  t: "unparsable";
  line: string;
}

function parseLine(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    const unparsable: UnparsableFrame = { t: "unparsable", line: line.slice(0, 200) };
    return unparsable;
  }
}

export class FrameTooLargeError extends Error {
  readonly code = "FRAME_TOO_LARGE";
  constructor(limit: number) {
    super(`agent frame exceeds ${limit} bytes`);
  }
}
