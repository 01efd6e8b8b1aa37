/**
 * Hardening at the edge, tried from outside over raw sockets: oversized request heads, slow clients,
 * deeply nested JSON on every face, foreign Hosts on every face, and server secrets that must reach
 * only their own guest.
 */
import assert from "node:assert/strict";
import { connect as tcpConnect, type Socket } from "node:net";
import { Writable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { startGateway } from "../src/main.js";
import { createLogger } from "../src/telemetry/log.js";
import { INITIALIZE, post } from "./auth-helpers.js";
import { connect, eventually, serversDirWith, startReadyGateway, testConfig } from "./helpers.js";

/** Sends `chunks` on a raw connection, `gapMs` apart (the last one again and again); resolves with what came back and when the server closed it. */
function trickle(port: number, chunks: string[], gapMs: number): Promise<{ reply: string; closedAfterMs: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket: Socket = tcpConnect(port, "127.0.0.1");
    let reply = "";
    let timer: NodeJS.Timeout | undefined;
    socket.on("data", (d) => (reply += d.toString()));
    socket.on("error", () => undefined);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ reply, closedAfterMs: Date.now() - started });
    });
    const next = (i: number) => {
      if (socket.destroyed) return;
      socket.write(chunks[Math.min(i, chunks.length - 1)]!);
      timer = setTimeout(() => next(i + 1), gapMs);
    };
    socket.on("connect", () => next(0));
  });
}

describe("hardening at the edge", { timeout: 180_000 }, () => {
  let gateway: Awaited<ReturnType<typeof startReadyGateway>>;
  let base: string;

  before(async () => {
    gateway = await startReadyGateway(
      { servers: ["memory"], maxHeaderBytes: 4096, maxJsonDepth: 16, headersTimeoutMs: 600, requestTimeoutMs: 1_200, auditLog: "off" },
      { pool: { prestarted: 0, warm: 0 } },
    );
    base = `http://127.0.0.1:${gateway.port}`;
  });
  after(async () => {
    await gateway?.close();
  });

  test("a request head over the limit gets 431, on the MCP face and on hono's routes", async () => {
    for (const path of ["/mcp", "/sse", "/api/status"]) {
      const response = await fetch(`${base}${path}`, { headers: { "x-padding": "a".repeat(8192) } });
      assert.equal(response.status, 431, path);
    }
  });

  test("a client that sends its request head too slowly is cut off", async () => {
    const { reply, closedAfterMs } = await trickle(gateway.port, ["POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n", "X-Slow: a\r\n"], 150);
    assert.match(reply, /^HTTP\/1\.1 408/);
    assert.ok(closedAfterMs < 5_000, `closed after ${closedAfterMs} ms`);
  });

  test("a client that never finishes its body is cut off", async () => {
    const head = `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{`;
    const { closedAfterMs } = await trickle(gateway.port, [head, " "], 400);
    assert.ok(closedAfterMs < 6_000, `closed after ${closedAfterMs} ms`);
    assert.equal((await fetch(`${base}/healthz`)).status, 200, "the gateway is still up");
  });

  test("JSON nested deeper than the limit is refused on every face, with -32600", async () => {
    const deep = (depth: number) => `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"read_graph","arguments":{"x":${"[".repeat(depth)}${"]".repeat(depth)}}}}`;
    const streamable = await post(`${base}/servers/memory/mcp`, deep(40));
    assert.equal(streamable.status, 400);
    assert.match(((await streamable.json()) as { error: { message: string } }).error.message, /nested deeper than 16/);

    const controller = new AbortController();
    const stream = await fetch(`${base}/servers/memory/sse`, { headers: { accept: "text/event-stream" }, signal: controller.signal });
    const reader = stream.body!.getReader();
    let text = "";
    while (!/sessionId=([\w-]+)/.test(text)) text += new TextDecoder().decode((await reader.read()).value);
    const messages = `${base}/servers/memory/messages?sessionId=${/sessionId=([\w-]+)/.exec(text)![1]}`;
    const sse = await post(messages, deep(40));
    assert.equal(sse.status, 400);
    assert.equal(((await sse.json()) as { error: { code: number } }).error.code, -32600);
    controller.abort();

    const ws = new WebSocket(`ws://127.0.0.1:${gateway.port}/servers/memory/ws`, "mcp");
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    const reply = new Promise<{ error: { code: number; message: string } }>((resolve) => ws.once("message", (d) => resolve(JSON.parse(d.toString()))));
    ws.send(deep(40));
    const error = (await reply).error;
    assert.equal(error.code, -32600);
    assert.match(error.message, /nested deeper/);
    ws.close();

    // Nesting within the limit is no problem.
    const client = await connect(`${base}/servers/memory/mcp`);
    await client.callTool({ name: "search_nodes", arguments: { query: "x" } });
    await client.close();
  });

  test("a foreign Host or Origin is refused on every face", async () => {
    for (const path of ["/mcp", "/servers/memory/mcp", "/sse", "/messages?sessionId=x", "/api/status"]) {
      for (const headers of [{ host: "evil.example" }, { origin: "http://evil.example" }]) {
        const response = await new Promise<number>((resolve) => {
          const socket = tcpConnect(gateway.port, "127.0.0.1", () => {
            const lines = [`POST ${path} HTTP/1.1`, `Host: ${"host" in headers ? headers.host : "127.0.0.1"}`, "Content-Type: application/json", "Content-Length: 2", "Connection: close"];
            if ("origin" in headers) lines.push(`Origin: ${headers.origin}`);
            socket.end(`${lines.join("\r\n")}\r\n\r\n{}`);
          });
          let reply = "";
          socket.on("data", (d) => (reply += d.toString()));
          socket.on("close", () => resolve(Number(/^HTTP\/1\.1 (\d+)/.exec(reply)?.[1])));
        });
        assert.equal(response, 403, `${path} with ${JSON.stringify(headers)}`);
      }
    }
    const ws = await new Promise<number>((resolve) => {
      const socket = new WebSocket(`ws://127.0.0.1:${gateway.port}/ws`, "mcp", { headers: { origin: "http://evil.example" } });
      socket.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
      socket.once("open", () => resolve(101));
      socket.once("error", () => undefined);
    });
    assert.equal(ws, 403);
    assert.equal((await post(`${base}/mcp`, INITIALIZE)).status, 200, "a well-formed request still works");
  });
});

test("a server's secret env reaches its own guest's server process, and no log, status, trace or other server", { timeout: 180_000 }, async () => {
  const secret = "s3cr3t-hardening-7f1d0c";
  const serversDir = await serversDirWith({
    exec: (m) => ({ env: { ...m.env, SERVICE_TOKEN: secret }, secretEnv: ["SERVICE_TOKEN"] }),
    memory: () => ({}),
  });
  let logged = "";
  const sink = new Writable({ write: (chunk, _enc, done) => void ((logged += chunk.toString()), done()) });
  const config = testConfig({ servers: ["exec", "memory"], serversDir, logLevel: "debug", auditLog: "off" });
  const gateway = await startGateway(config, createLogger("debug", { destination: sink as never, format: "json" }), () => undefined, { pool: { prestarted: 0, warm: 0 } });
  try {
    await gateway.settled;
    const base = `http://127.0.0.1:${gateway.port}`;
    const exec = await connect(`${base}/servers/exec/mcp`);
    // Commands run with a fixed environment; the server process (their parent) has the manifest's env.
    const run = (await exec.callTool({ name: "run", arguments: { command: `tr '\\0' '\\n' < /proc/$PPID/environ | grep -c '^SERVICE_TOKEN=${secret}$'` } })) as CallToolResult;
    assert.equal((run.structuredContent as { stdout: string }).stdout, "1\n", "the exec server in its guest has its secret");
    const leak = (await exec.callTool({ name: "run", arguments: { command: `echo ${secret}` } })) as CallToolResult;
    assert.ok(JSON.stringify(leak).includes(secret), "a tool's own result is the client's to see");
    await exec.close();

    const memory = await connect(`${base}/servers/memory/mcp`);
    const graph = await memory.callTool({ name: "read_graph", arguments: {} });
    assert.ok(!JSON.stringify(graph).includes(secret));
    await memory.close();

    const status = await (await fetch(`${base}/api/status`)).text();
    const traces = await (await fetch(`${base}/api/traces?limit=200`)).text();
    const metrics = await (await fetch(`${base}/metrics`)).text();
    for (const [where, text] of Object.entries({ status, traces, metrics })) assert.ok(!text.includes(secret), `no secret in ${where}`);
    await eventually(() => logged.includes("tool call"), "the request log to be written");
    assert.ok(!logged.includes(secret), "no secret in the log, even the echo's request line");
  } finally {
    await gateway.close();
  }
});
