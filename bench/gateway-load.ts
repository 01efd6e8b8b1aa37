/**
 * The load generator of bench/gateway, run as a child process (fork, IPC) so that the client's CPU
 * work never shares the gateway's event loop. The parent decides what to send and when; this process
 * only opens clients, makes calls and times them.
 *
 *   {op:"open", key, url, n, kind}          -> {ok}          n sessions (raw keep-alive client, the same
 *                                                            sending 2026-07-28 stateless requests, or SDK Client)
 *   {op:"call", key, tool, args}            -> {ms, id}      one call by the key's first client, timed
 *   {op:"load", key, n, tool, args, warmupMs, windowMs}
 *                                           -> {calls, errors, windowMs, p50, p99}
 *                                              the key's first n clients call in a loop; calls that end
 *                                              inside the window are counted
 *   {op:"close", key}                       -> {ok}          DELETE every session of the key
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { KeepAliveMcpClient } from "./keepalive-mcp-client.js";
import { percentile } from "./stats.js";

export type LoadCommand =
  | { op: "open"; key: string; url: string; n: number; kind: "raw" | "raw-2026" | "sdk" }
  | { op: "call"; key: string; tool: string; args: Record<string, unknown> }
  | { op: "load"; key: string; n: number; tool: string; args: Record<string, unknown>; warmupMs: number; windowMs: number }
  | { op: "close"; key: string };

export interface LoadResult {
  calls: number;
  errors: number;
  windowMs: number;
  p50: number;
  p99: number;
}

interface BenchClient {
  call(tool: string, args: Record<string, unknown>): Promise<void>;
  /** The JSON-RPC id of the newest call, when the client exposes it. */
  lastId(): number | undefined;
  close(): Promise<void>;
}

async function openRaw(url: string, era?: "2026-07-28"): Promise<BenchClient> {
  const client = new KeepAliveMcpClient(url, era);
  await client.initialize();
  return {
    async call(tool, args) {
      const result = await client.request("tools/call", { name: tool, arguments: args });
      if (result.isError) throw new Error(`${tool} returned isError`);
    },
    lastId: () => client.lastId,
    close: () => client.close(),
  };
}

async function openSdk(url: string): Promise<BenchClient> {
  const client = new Client({ name: "bench", version: "0" });
  const transport = new StreamableHTTPClientTransport(new URL(url));
  await client.connect(transport);
  return {
    async call(tool, args) {
      const result = await client.callTool({ name: tool, arguments: args });
      if (result.isError) throw new Error(`${tool} returned isError`);
    },
    lastId: () => undefined,
    async close() {
      // Client.close() only drops the connection; the session (and on mcpvisor its clone) would stay
      // until it idles out, and an idle clone gets suspended in the middle of later measurements.
      await transport.terminateSession().catch(() => undefined);
      await client.close();
    },
  };
}

const clients = new Map<string, BenchClient[]>();

function clientsOf(key: string): BenchClient[] {
  const list = clients.get(key);
  if (!list) throw new Error(`no clients opened under '${key}'`);
  return list;
}

async function load(cmd: Extract<LoadCommand, { op: "load" }>): Promise<LoadResult> {
  const list = clientsOf(cmd.key).slice(0, cmd.n);
  if (list.length < cmd.n) throw new Error(`only ${list.length} clients under '${cmd.key}'`);
  // Every client's first calls happen before the clock starts (a clone resumes on its session's first call).
  await Promise.all(list.map(async (c) => { for (let i = 0; i < 3; i++) await c.call(cmd.tool, cmd.args); }));
  const start = performance.now();
  const windowStart = start + cmd.warmupMs;
  const windowEnd = windowStart + cmd.windowMs;
  let calls = 0;
  let errors = 0;
  const latencies: number[] = [];
  await Promise.all(
    list.map(async (c) => {
      while (performance.now() < windowEnd) {
        const t0 = performance.now();
        let ok = true;
        try {
          await c.call(cmd.tool, cmd.args);
        } catch {
          ok = false;
        }
        const t1 = performance.now();
        if (t1 >= windowStart && t1 <= windowEnd) {
          if (ok) {
            calls++;
            latencies.push(t1 - t0);
          } else errors++;
        }
      }
    }),
  );
  return { calls, errors, windowMs: cmd.windowMs, p50: percentile(latencies, 50), p99: percentile(latencies, 99) };
}

async function handle(cmd: LoadCommand): Promise<unknown> {
  switch (cmd.op) {
    case "open": {
      const opened = await Promise.all(Array.from({ length: cmd.n }, () => (cmd.kind === "sdk" ? openSdk(cmd.url) : openRaw(cmd.url, cmd.kind === "raw-2026" ? "2026-07-28" : undefined))));
      clients.set(cmd.key, [...(clients.get(cmd.key) ?? []), ...opened]);
      return { ok: true };
    }
    case "call": {
      const client = clientsOf(cmd.key)[0]!;
      const t0 = performance.now();
      await client.call(cmd.tool, cmd.args);
      return { ms: performance.now() - t0, id: client.lastId() };
    }
    case "load":
      return load(cmd);
    case "close": {
      await Promise.allSettled((clients.get(cmd.key) ?? []).map((c) => c.close()));
      clients.delete(cmd.key);
      return { ok: true };
    }
  }
}

process.on("message", (raw) => {
  const { seq, cmd } = raw as { seq: number; cmd: LoadCommand };
  handle(cmd).then(
    (result) => process.send!({ seq, result }),
    (err: Error) => process.send!({ seq, error: err.message }),
  );
});
process.on("disconnect", () => process.exit(0));
