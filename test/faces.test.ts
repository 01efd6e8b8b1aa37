import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import type { IncomingMessage } from "node:http";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { WebSocketClientTransport } from "@modelcontextprotocol/sdk/client/websocket.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { WebSocket } from "ws";
import { REPO_ROOT } from "../src/main.js";
import { alive, childPids, eventually, sh, startReadyGateway } from "./helpers.js";

// The SDK's WebSocket client needs a global WebSocket, which Node 20 has only behind
// --experimental-websocket; the `ws` package implements the same API, so this file runs with plain node.
if (!("WebSocket" in globalThis)) Object.assign(globalThis, { WebSocket });

type ReadyGateway = Awaited<ReturnType<typeof startReadyGateway>>;
const BIN = join(REPO_ROOT, "bin", "mcpvisor");

describe("client faces: legacy SSE, WebSocket and stdio, with real clients and real VMs", { timeout: 120_000 }, () => {
  let gateway: ReadyGateway;
  let base: string;
  const leased = (server: string) => gateway.pool.stats().find((s) => s.server === server)!.leased;

  before(async () => {
    gateway = await startReadyGateway({ servers: ["memory", "exec"] });
    base = `http://127.0.0.1:${gateway.port}`;
  });
  after(async () => {
    await gateway?.close();
  });

  /**
   * Lists tools, runs `echo hi` in an exec clone, closes the client, and checks the clone was destroyed.
   * `run` is the exec tool's name on the route: `run` on /servers/exec, `exec__run` on the aggregate.
   */
  async function roundTrip(transport: Transport, run = "run"): Promise<void> {
    const before = leased("exec");
    const client = new Client({ name: "mcpvisor-test", version: "0.0.0" });
    await client.connect(transport);
    const tools = await client.listTools();
    assert.ok(tools.tools.some((t) => t.name === run));
    const result = (await client.callTool({ name: run, arguments: { command: "echo hi" } })) as CallToolResult;
    assert.equal((result.structuredContent as { stdout: string }).stdout, "hi\n");
    assert.equal(leased("exec"), before + 1, "the session holds one clone");
    await client.close();
    await eventually(() => leased("exec") === before, "closing the client destroyed its clone");
  }

  test("legacy SSE (2024-11-05): the SDK client runs a command in a clone", async () => {
    await roundTrip(new SSEClientTransport(new URL(`${base}/servers/exec/sse`)));
  });

  test("WebSocket: the SDK client runs a command in a clone", async () => {
    await roundTrip(new WebSocketClientTransport(new URL(`ws://127.0.0.1:${gateway.port}/servers/exec/ws`)));
  });

  test("the aggregate over legacy SSE (/sse) and WebSocket (/ws): namespaced tools, calls routed to the server", async () => {
    await roundTrip(new SSEClientTransport(new URL(`${base}/sse`)), "exec__run");
    await roundTrip(new WebSocketClientTransport(new URL(`ws://127.0.0.1:${gateway.port}/ws`)), "exec__run");
  });

  test("legacy SSE refuses malformed POSTs with 400, unknown sessions with 404, and ends the session with its stream", async () => {
    const stream = new AbortController();
    const sse = await fetch(`${base}/servers/exec/sse`, { signal: stream.signal });
    assert.equal(sse.status, 200);
    const endpoint = await firstEvent(sse, "endpoint");
    assert.match(endpoint, /^\/servers\/exec\/messages\?sessionId=/);
    const post = (path: string, body: string) =>
      fetch(`${base}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body });

    const notJson = await post(endpoint, "{not json");
    assert.equal(notJson.status, 400);
    assert.equal(((await notJson.json()) as RpcError).error.code, -32700);
    const notRpc = await post(endpoint, JSON.stringify({ hello: "world" }));
    assert.equal(notRpc.status, 400);
    assert.match(((await notRpc.json()) as RpcError).error.message, /not a JSON-RPC 2.0 message/);
    const unknown = await post("/servers/exec/messages?sessionId=no-such-session", JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }));
    assert.equal(unknown.status, 404);
    assert.match(((await unknown.json()) as RpcError).error.message, /Session not found/);
    const tooLarge = await post("/messages?sessionId=x", "x".repeat(4 * 1024 * 1024 + 1));
    assert.equal(tooLarge.status, 413);
    const ping = await post(endpoint, JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }));
    assert.equal(ping.status, 202, "the session still works after bad input");

    stream.abort();
    await eventually(() => gateway.http.sessionCounts().sse === 0, "the session ended with its stream");
    const afterClose = await post(endpoint, JSON.stringify({ jsonrpc: "2.0", id: 2, method: "ping" }));
    assert.equal(afterClose.status, 404);
  });

  test("WebSocket answers a non-JSON frame with -32700 and keeps the socket; an oversized frame closes it with 1009", async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${gateway.port}/servers/exec/ws`, "mcp");
    await once(ws, "open");
    assert.equal(ws.protocol, "mcp");
    const next = async () => JSON.parse(String((await once(ws, "message"))[0])) as RpcError & { result?: unknown };

    ws.send("{not json");
    const parseError = await next();
    assert.equal(parseError.error.code, -32700);
    assert.equal(parseError.id, null);
    ws.send("42");
    assert.equal((await next()).error.code, -32600);
    ws.send(JSON.stringify({ jsonrpc: "2.0", id: 7, method: "ping" }));
    assert.deepEqual(await next(), { jsonrpc: "2.0", id: 7, result: {} });

    ws.send("x".repeat(4 * 1024 * 1024 + 1));
    const [code] = (await once(ws, "close")) as [number];
    assert.equal(code, 1009);
    await eventually(() => gateway.http.sessionCounts().webSocket === 0, "the session ended with its socket");
  });

  test("WebSocket upgrades to an unknown server, an unknown path or a foreign Origin are refused", async () => {
    const refused = async (path: string, headers: Record<string, string> = {}) => {
      const ws = new WebSocket(`ws://127.0.0.1:${gateway.port}${path}`, "mcp", { headers });
      ws.on("error", () => undefined);
      const [, res] = (await once(ws, "unexpected-response")) as [unknown, IncomingMessage];
      let body = "";
      for await (const chunk of res) body += chunk;
      ws.terminate();
      return { status: res.statusCode, message: (JSON.parse(body) as RpcError).error.message };
    };
    assert.deepEqual(await refused("/servers/nope/ws"), { status: 404, message: "No hosted server named 'nope'" });
    assert.equal((await refused("/elsewhere")).status, 404);
    const foreign = await refused("/servers/exec/ws", { origin: "http://evil.example" });
    assert.equal(foreign.status, 403);
    assert.match(foreign.message, /Origin 'http:\/\/evil.example' is not allowed/);
  });

  test("stdio: `mcpvisor stdio --server exec` serves the SDK client; closing it ends the process and its VMs", async () => {
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [BIN, "stdio", "--server", "exec"],
      cwd: REPO_ROOT,
      env: stdioEnv(),
      stderr: "pipe",
    });
    let stderr = "";
    transport.stderr?.on("data", (chunk: Buffer) => (stderr += chunk));
    const client = new Client({ name: "mcpvisor-test", version: "0.0.0" });
    await client.connect(transport);
    const pid = transport.pid!;
    const tools = await client.listTools();
    assert.ok(tools.tools.some((t) => t.name === "run"), stderr);
    assert.equal((await sh(client, "echo hi")).stdout, "hi\n");
    const vms = childPids(pid);
    assert.ok(vms.length >= 1, "the stdio process runs its own VMs");
    await client.close();
    await eventually(() => !alive(pid) && vms.every((vm) => !alive(vm)), "the stdio process and its VMs are gone");
  });

  test("stdio aggregated (no --server): stdout carries only MCP messages, and the process exits 0 when stdin closes", async () => {
    const child = spawn(process.execPath, [BIN, "stdio", "--servers", "exec"], { cwd: REPO_ROOT, env: stdioEnv() });
    let stdout = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk));
    const exited = once(child, "exit");
    child.stdin.write(
      [
        { jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2024-11-05", capabilities: {}, clientInfo: { name: "t", version: "0" } } },
        { jsonrpc: "2.0", method: "notifications/initialized" },
        { jsonrpc: "2.0", id: 2, method: "ping" },
        { jsonrpc: "2.0", id: 3, method: "tools/call", params: { name: "exec__run", arguments: { command: "echo hi" } } },
      ]
        .map((m) => JSON.stringify(m) + "\n")
        .join(""),
    );
    await eventually(() => stdout.split("\n").length > 3, "every reply arrived", 30_000);
    child.stdin.end();
    const [code] = (await exited) as [number | null];
    assert.equal(code, 0);
    const lines = stdout.trimEnd().split("\n").map((l) => JSON.parse(l) as { id: number; result: Record<string, unknown> });
    assert.deepEqual(lines.map((l) => l.id).sort(), [1, 2, 3]);
    assert.equal(lines.find((l) => l.id === 1)!.result.protocolVersion, "2024-11-05");
    assert.equal((lines.find((l) => l.id === 3)!.result.structuredContent as { stdout: string }).stdout, "hi\n");
  });
});

interface RpcError {
  jsonrpc: "2.0";
  id: number | string | null;
  error: { code: number; message: string };
}

/** Reads an SSE response until the first event of `type`; returns its data. */
async function firstEvent(response: Response, type: string): Promise<string> {
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`stream ended before an '${type}' event`);
    text += value;
    const event = text.split("\n\n").find((e) => e.includes(`event: ${type}`));
    const data = event?.split("\n").find((l) => l.startsWith("data: "));
    if (data) {
      reader.releaseLock();
      return data.slice("data: ".length);
    }
  }
}

function stdioEnv(): Record<string, string> {
  const env = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined));
  return { ...env, MCPVISOR_LOG_LEVEL: "warn" };
}
