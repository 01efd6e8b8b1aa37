import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import type { IncomingMessage } from "node:http";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { WebSocketClientTransport } from "@modelcontextprotocol/sdk/client/websocket.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { WebSocket } from "ws";
import { StdioFace } from "../src/gateway/stdio.js";
import { REPO_ROOT } from "../src/main.js";
import { createLogger } from "../src/telemetry/log.js";
import { runFaceSuite } from "./face.case.js";
import { alive, childPids, eventually, sh, startReadyGateway } from "./helpers.js";

const quietLog = createLogger("silent");

// The SDK's WebSocket client needs a global WebSocket, which Node 20 has only behind
// --experimental-websocket; the `ws` package implements the same API, so this file runs with plain node.
if (!("WebSocket" in globalThis)) Object.assign(globalThis, { WebSocket });

type ReadyGateway = Awaited<ReturnType<typeof startReadyGateway>>;
const BIN = join(REPO_ROOT, "bin", "mcpvisor");
const ACCEPT = "application/json, text/event-stream";
const INITIALIZE = { jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "t", version: "0" } } };

describe("client faces: Streamable HTTP, legacy SSE, WebSocket and stdio, with real clients and real VMs", { timeout: 180_000 }, () => {
  let gateway: ReadyGateway;
  let base: string;
  const leased = (server: string) => gateway.pool.stats().find((s) => s.members.includes(server))!.leased;
  /** A face's URL: `/<endpoint>` for the aggregate ("*"), `/servers/<name>/<endpoint>` for one server. */
  const url = (route: string, endpoint: string, scheme = "http") =>
    `${scheme}://127.0.0.1:${gateway.port}${route === "*" ? "" : `/servers/${route}`}/${endpoint}`;

  before(async () => {
    gateway = await startReadyGateway({ servers: ["memory", "exec"] });
    base = `http://127.0.0.1:${gateway.port}`;
  });
  after(async () => {
    await gateway?.close();
  });

  runFaceSuite({
    name: "Streamable HTTP",
    transport: (route) => new StreamableHTTPClientTransport(new URL(url(route, "mcp"))),
    // Closing the SDK's client only stops listening; DELETE ends the session.
    disconnect: async (client, transport) => {
      await (transport as StreamableHTTPClientTransport).terminateSession();
      await client.close();
    },
    sendRaw: async (server, text) => {
      const res = await fetch(url(server, "mcp"), { method: "POST", headers: { "content-type": "application/json", accept: ACCEPT }, body: text });
      assert.equal(res.status, 400);
      return ((await res.json()) as RpcError).error;
    },
    openUnknown: async (server) => {
      const res = await fetch(url(server, "mcp"), { method: "POST", headers: { "content-type": "application/json", accept: ACCEPT }, body: JSON.stringify(INITIALIZE) });
      return { status: res.status, message: ((await res.json()) as RpcError).error.message };
    },
    leased,
  });

  runFaceSuite({
    name: "legacy SSE",
    transport: (route) => new SSEClientTransport(new URL(url(route, "sse"))),
    sendRaw: async (server, text) => {
      const stream = new AbortController();
      try {
        const endpoint = await firstEvent(await fetch(url(server, "sse"), { signal: stream.signal }), "endpoint");
        const res = await fetch(`${base}${endpoint}`, { method: "POST", headers: { "content-type": "application/json" }, body: text });
        assert.equal(res.status, 400);
        return ((await res.json()) as RpcError).error;
      } finally {
        stream.abort();
      }
    },
    openUnknown: async (server) => {
      const res = await fetch(url(server, "sse"));
      return { status: res.status, message: ((await res.json()) as RpcError).error.message };
    },
    leased,
  });

  runFaceSuite({
    name: "WebSocket",
    transport: (route) => new WebSocketClientTransport(new URL(url(route, "ws", "ws"))),
    sendRaw: async (server, text) => {
      const ws = new WebSocket(url(server, "ws", "ws"), "mcp");
      await once(ws, "open");
      ws.send(text);
      const [data] = (await once(ws, "message")) as [Buffer];
      ws.close();
      return (JSON.parse(String(data)) as RpcError).error;
    },
    openUnknown: (server) => refusedUpgrade(url(server, "ws", "ws")),
    leased,
  });

  runFaceSuite({
    name: "stdio (the face over a pipe pair)",
    transport: (route) => {
      const toFace = new PassThrough();
      const fromFace = new PassThrough();
      void new StdioFace(gateway.router, route, gateway.modern, quietLog).serve(toFace, fromFace);
      return new PipeClientTransport(fromFace, toFace);
    },
    openUnknown: async (server) => {
      const error = await new StdioFace(gateway.router, server, gateway.modern, quietLog).serve(new PassThrough(), new PassThrough()).then(
        () => assert.fail("a session opened on a server not hosted"),
        (e: Error) => e,
      );
      return { message: error.message };
    },
    leased,
    skip: [{ reason: "the SDK's StdioServerTransport reports a line that is not JSON to onerror and answers nothing", tests: ["parseError"] }],
  });

  test("legacy SSE refuses a POST that is no JSON-RPC message with 400, unknown sessions with 404, and ends the session with its stream", async () => {
    const stream = new AbortController();
    const sse = await fetch(`${base}/servers/exec/sse`, { signal: stream.signal });
    assert.equal(sse.status, 200);
    const endpoint = await firstEvent(sse, "endpoint");
    assert.match(endpoint, /^\/servers\/exec\/messages\?sessionId=/);
    const post = (path: string, body: string) =>
      fetch(`${base}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body });

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

  test("WebSocket upgrades to an unknown path or from a foreign Origin are refused", async () => {
    const ws = `ws://127.0.0.1:${gateway.port}`;
    assert.equal((await refusedUpgrade(`${ws}/elsewhere`)).status, 404);
    const foreign = await refusedUpgrade(`${ws}/servers/exec/ws`, { origin: "http://evil.example" });
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

/**
 * The client end of a stdio face wired to a pipe pair: the SDK's newline-delimited JSON framing, read
 * from what the face writes; closing it ends the face's stdin, as a client process exiting does.
 */
class PipeClientTransport extends StdioServerTransport {
  constructor(
    fromFace: PassThrough,
    private readonly toFace: PassThrough,
  ) {
    super(fromFace, toFace);
  }

  override async close(): Promise<void> {
    await super.close();
    this.toFace.end();
  }
}

/** A WebSocket upgrade the gateway refuses: its HTTP status and the JSON-RPC error's message. */
async function refusedUpgrade(address: string, headers: Record<string, string> = {}): Promise<{ status?: number; message: string }> {
  const ws = new WebSocket(address, "mcp", { headers });
  ws.on("error", () => undefined);
  const [, res] = (await once(ws, "unexpected-response")) as [unknown, IncomingMessage];
  let body = "";
  for await (const chunk of res) body += chunk;
  ws.terminate();
  return { status: res.statusCode, message: (JSON.parse(body) as RpcError).error.message };
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
