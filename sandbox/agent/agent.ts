/**
 * mcpvisor guest agent: runs inside the microVM (stage 2 init starts it), bridges the host's agent
 * channel and the stdio of each hosted MCP server (one, or the members of a shared sandbox).
 * Protocol: ./protocol.ts.
 *
 * Environment (for tests on the host; a guest sets none of them):
 *   MCPVISOR_AGENT_DEVICE=stdio   use stdin/stdout as the channel instead of the virtio-serial port
 *   MCPVISOR_SERVER_SPEC=PATH     guest spec instead of /srv/.mcpvisor/guest.json
 *   MCPVISOR_RESUME_HELPER=PATH   resume helper instead of /usr/libexec/mcpvisor/resume-helper
 *
 * Power-off: when a server exits the agent sends `exit`, flushes it, and ends itself. The agent's
 * parent is the stage 2 init (PID 1), which then runs `poweroff -f`; QEMU sees the ACPI power-off and
 * exits. (Were PID 1 to end instead, the kernel panics and panic=-1 plus -no-reboot end QEMU too.)
 * With the virtio port, "ends itself" is SIGKILL to itself: a thread-pool thread sits in a blocking
 * read() on the port, and node's process.exit() joins the thread pool, so it would hang forever.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import { logAgent, openDeviceChannel, openStdioChannel, type Channel } from "./channel.js";
import { startEgress, type Egress } from "./egress/index.js";
import { HostedServer, loadGuestSpec, type GuestSpec } from "./hosted-server.js";
import { AGENT_PROTOCOL_VERSION, MAX_FRAME_BYTES, encodeFrame, requestKey, type GuestFrame } from "./protocol.js";
import { ResyncingDecoder } from "./resync-decoder.js";
import { DEFAULT_RESUME_HELPER, ResumeHelper } from "./resume.js";

const DEFAULT_SPEC = "/srv/.mcpvisor/guest.json";
/** Bounds the timing table if a server never answers some requests. */
const MAX_TIMED_REQUESTS = 10_000;

function isResponse(msg: Record<string, unknown>): boolean {
  return msg.id !== undefined && !("method" in msg);
}
/** Above this many bytes queued for the host, stop reading the server's stdout until it drains. */
const CHANNEL_HIGH_WATER = 1024 * 1024;
const EXIT_FLUSH_MS = 3_000;

function uptimeMs(): number {
  try {
    const secs = Number.parseFloat(fs.readFileSync("/proc/uptime", "utf8").split(" ")[0] ?? "");
    if (Number.isFinite(secs)) return Math.round(secs * 1000);
  } catch {
    // not Linux: fall through
  }
  return Math.round(os.uptime() * 1000);
}

function kernelCmdline(): string {
  try {
    return fs.readFileSync("/proc/cmdline", "utf8");
  } catch {
    return "";
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Processes whose parent is one of `parents` (in the guest: what the hosted servers started that still runs). */
function childProcesses(parents: number[]): number {
  const wanted = new Set(parents);
  let count = 0;
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const [state, ppid] = fs.readFileSync(`/proc/${entry}/stat`, "utf8").split(") ").at(-1)!.split(" ");
      if (state !== "Z" && wanted.has(Number(ppid))) count++; // a zombie is about to be reaped: no work
    } catch {
      // it ended while we looked
    }
  }
  return count;
}

/** Several servers' stderr in one text: each line led by its server's name. */
function prefixLines(name: string, text: string): string {
  return text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => `${name}: ${line}\n`)
    .join("");
}

const stdio = process.env.MCPVISOR_AGENT_DEVICE === "stdio";

/** Ends the agent; see the header for why the device mode cannot use process.exit(). */
function terminate(code: number): never {
  if (!stdio) process.kill(process.pid, "SIGKILL");
  process.exit(code);
}

async function main(): Promise<void> {
  const channel: Channel = stdio ? openStdioChannel() : await openDeviceChannel();
  const send = (frame: GuestFrame) => channel.write(encodeFrame(frame));
  const resumeHelper = new ResumeHelper(process.env.MCPVISOR_RESUME_HELPER || DEFAULT_RESUME_HELPER);
  const jitless = /(^|\s)mcpvisor\.jitless=1(\s|$)/.test(kernelCmdline());

  let shuttingDown = false;
  const shutdown = async (frame: GuestFrame) => {
    if (shuttingDown) return;
    shuttingDown = true;
    void send(frame);
    await channel.flush(EXIT_FLUSH_MS);
    terminate(0);
  };

  let spec: GuestSpec;
  try {
    spec = loadGuestSpec(process.env.MCPVISOR_SERVER_SPEC || DEFAULT_SPEC);
  } catch (err) {
    logAgent(`cannot load the guest spec: ${(err as Error).message}`);
    await shutdown({ t: "exit", code: null, signal: null, stderrTail: `mcpvisor-agent: ${(err as Error).message}` });
    return;
  }

  /** When each request in flight was written to its server (by server and id), to report its time inside the guest. */
  const requestStarts = new Map<string, number>();
  const servers = new Map<string, HostedServer>();
  for (const serverSpec of spec.servers) {
    const name = serverSpec.name;
    const server: HostedServer = new HostedServer({
      message(msg) {
        // A response to a timed request carries the time the server took, as seen inside the guest.
        const key = isResponse(msg) ? requestKey(name, msg.id as string | number) : undefined;
        const started = key === undefined ? undefined : requestStarts.get(key);
        if (started !== undefined) requestStarts.delete(key!);
        void send(started === undefined ? { t: "mcp", s: name, msg } : { t: "mcp", s: name, msg, guestMs: performance.now() - started });
        if (channel.pendingBytes() > CHANNEL_HIGH_WATER) pauseServerOutput();
      },
      badOutput(description) {
        void send({ t: "error", message: `${name}: ${description}` });
      },
      exit(code, signal, error) {
        let tail = server.stderrTail.toString();
        if (error) tail += `${tail && !tail.endsWith("\n") ? "\n" : ""}mcpvisor-agent: ${error.message}`;
        for (const other of servers.values()) if (other !== server) other.kill("SIGTERM");
        void shutdown({ t: "exit", server: name, code, signal, stderrTail: tail });
      },
    });
    servers.set(name, server);
  }
  const allServers = () => [...servers.values()];

  let outputPaused = false;
  const pauseServerOutput = () => {
    if (outputPaused) return;
    outputPaused = true;
    for (const server of allServers()) server.pauseOutput();
    void channel.flush(60_000).then(() => {
      outputPaused = false;
      for (const server of allServers()) server.resumeOutput();
    });
  };

  // Started before the servers and before `hello`, so it is already running in the template snapshot.
  resumeHelper.start();
  let egress: Egress | undefined;
  if (spec.egress) {
    try {
      egress = await startEgress(spec.egress);
    } catch (err) {
      // The servers still start: their connections fail at once, and the console says why.
      logAgent(`egress unavailable: ${(err as Error).message}`);
    }
  }
  const pids: Record<string, number> = {};
  for (const serverSpec of spec.servers) {
    const pid = servers.get(serverSpec.name)!.start(serverSpec, jitless);
    if (pid === undefined) return; // spawn failed: its exit event reports it
    pids[serverSpec.name] = pid;
  }
  void send({ t: "hello", v: AGENT_PROTOCOL_VERSION, kernel: os.release(), servers: pids, uptimeMs: uptimeMs() });

  const stopAll = () => {
    for (const server of allServers()) server.kill("SIGTERM");
  };
  process.on("SIGTERM", stopAll);

  const decoder = new ResyncingDecoder();
  const onChunk = async (chunk: Buffer) => {
    const { frames, dropped } = decoder.push(chunk);
    if (dropped) void send({ t: "error", message: `host frame larger than ${MAX_FRAME_BYTES} bytes dropped` });
    // Frames are handled in order; only `resume` and a full server stdin make the next one wait.
    for (const frame of frames) await handleFrame(frame);
  };

  const handleFrame = async (frame: unknown): Promise<void> => {
    if (!isObject(frame)) {
      void send({ t: "error", message: "frame is not a JSON object" });
      return;
    }
    switch (frame.t) {
      case "mcp": {
        if (!isObject(frame.msg)) {
          void send({ t: "error", message: "mcp frame without an object `msg`" });
          return;
        }
        const server = typeof frame.s === "string" ? servers.get(frame.s) : undefined;
        if (!server) {
          void send({ t: "error", message: `mcp frame for server ${JSON.stringify(frame.s)}, which this guest does not host; dropped` });
          return;
        }
        const id = frame.msg.id;
        if ((typeof id === "string" || typeof id === "number") && typeof frame.msg.method === "string") {
          if (requestStarts.size >= MAX_TIMED_REQUESTS) requestStarts.clear();
          requestStarts.set(requestKey(frame.s as string, id), performance.now());
        }
        const ok = await server.send(frame.msg);
        if (!ok) void send({ t: "error", message: `server '${String(frame.s)}' is not running; mcp message dropped` });
        return;
      }
      case "ping": {
        if (typeof frame.id !== "number") {
          void send({ t: "error", message: "ping frame without a numeric `id`" });
          return;
        }
        void send({
          t: "pong",
          id: frame.id,
          serverAlive: allServers().every((s) => s.isAlive()),
          uptimeMs: uptimeMs(),
          stderrTail: servers.size === 1 ? allServers()[0]!.stderrTail.toString() : [...servers].map(([name, s]) => prefixLines(name, s.stderrTail.toString())).join(""),
        });
        return;
      }
      case "resume": {
        const { id, timeMs, seed } = frame;
        if (typeof id !== "number" || typeof timeMs !== "number" || typeof seed !== "string") {
          void send({ t: "error", message: "resume frame needs numeric `id`, `timeMs` and a base64 `seed`" });
          return;
        }
        const result = await resumeHelper.resume(timeMs, Buffer.from(seed, "base64"));
        egress?.reset();
        if (result.error) void send({ t: "error", message: result.error });
        void send({ t: "resumed", id, clockMs: Date.now(), reseeded: result.reseeded });
        return;
      }
      case "children": {
        if (typeof frame.id !== "number") {
          void send({ t: "error", message: "children frame without a numeric `id`" });
          return;
        }
        void send({ t: "children", id: frame.id, count: childProcesses(allServers().flatMap((s) => (s.pid === undefined ? [] : [s.pid]))) });
        return;
      }
      case "clock": {
        const { timeMs, seed } = frame;
        if (typeof timeMs !== "number" || typeof seed !== "string") {
          void send({ t: "error", message: "clock frame needs a numeric `timeMs` and a base64 `seed`" });
          return;
        }
        const result = await resumeHelper.resume(timeMs, Buffer.from(seed, "base64"));
        if (result.error) void send({ t: "error", message: result.error });
        return;
      }
      case "unparsable":
        void send({ t: "error", message: `unparsable frame: ${String(frame.line ?? "")}` });
        return;
      default:
        return; // unknown types are ignored (forward compatibility)
    }
  };

  // In stdio mode the host closing stdin means it is gone: stop the server, which ends the agent.
  channel.start(onChunk, stopAll);
}

process.on("uncaughtException", (err) => {
  // Last resort: a bug here must not take the channel down silently.
  logAgent(`uncaught: ${err.stack ?? err.message}`);
});

main().catch((err: unknown) => {
  logAgent(`fatal: ${(err as Error).stack ?? String(err)}`);
  terminate(1);
});
