/**
 * An MCP server as a local stdio process, spoken to over raw pipes (newline-delimited JSON-RPC): the
 * "direct" baseline for a gateway that wraps a stdio server. No client library, so the round trip is the
 * pipes' and the server's.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";

export class StdioMcpProcess {
  private readonly pending = new Map<number, (message: Record<string, unknown>) => void>();
  private buffered = "";
  private nextId = 1;
  private exitError: Error | undefined;

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => this.onData(chunk));
    child.stderr.resume();
    child.on("exit", (code, signal) => {
      this.exitError = new Error(`stdio server exited (${code ?? signal})`);
      for (const resolve of this.pending.values()) resolve({ error: { message: this.exitError.message } });
      this.pending.clear();
    });
  }

  static async start(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<StdioMcpProcess> {
    const server = new StdioMcpProcess(spawn(command, args, { env, stdio: ["pipe", "pipe", "pipe"] }));
    await server.request("initialize", { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "bench", version: "0" } });
    server.notify("notifications/initialized");
    return server;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  private onData(chunk: string): void {
    this.buffered += chunk;
    for (let end = this.buffered.indexOf("\n"); end !== -1; end = this.buffered.indexOf("\n")) {
      const line = this.buffered.slice(0, end);
      this.buffered = this.buffered.slice(end + 1);
      if (!line.trim()) continue;
      const message = JSON.parse(line) as Record<string, unknown>;
      if (typeof message.id === "number" && !("method" in message)) {
        const resolve = this.pending.get(message.id);
        this.pending.delete(message.id);
        resolve?.(message);
      }
    }
  }

  notify(method: string, params?: Record<string, unknown>): void {
    this.child.stdin.write(JSON.stringify({ jsonrpc: "2.0", method, ...(params ? { params } : {}) }) + "\n");
  }

  async request(method: string, params: Record<string, unknown>): Promise<Record<string, unknown>> {
    if (this.exitError) throw this.exitError;
    const id = this.nextId++;
    const reply = new Promise<Record<string, unknown>>((resolve) => this.pending.set(id, resolve));
    this.child.stdin.write(JSON.stringify({ jsonrpc: "2.0", id, method, params }) + "\n");
    const message = await reply;
    if (message.error) throw new Error(`${method}: ${JSON.stringify(message.error)}`);
    return message.result as Record<string, unknown>;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 2_000);
    await exited;
    clearTimeout(timer);
  }
}
