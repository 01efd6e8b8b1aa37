/**
 * Fuzz across the faces: over 10 000 malformed, oversized, too deep and schema-invalid messages, each
 * of which must get a clear error (an HTTP error with a JSON-RPC error body, or a JSON-RPC error reply
 * naming its id), after which the gateway is still up and a well-formed call still succeeds everywhere.
 * The messages are generated from a fixed seed, so a failure can be replayed.
 */
import assert from "node:assert/strict";
import { Agent, request } from "node:http";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { connect, startReadyGateway } from "./helpers.js";
import { prng } from "./prng.js";

const SEED = Number(process.env.MCPVISOR_FUZZ_SEED ?? 20261125);
const MAX_BODY = 64 * 1024;
const MAX_DEPTH = 32;

interface Fuzzed {
  kind: string;
  text: string;
  /** The id a JSON-RPC error reply must carry when the message had a usable one. */
  id?: number;
}

/** Bad messages of every kind; `tool(name)` is how the face under test names a memory-server tool. */
function generator(random: () => number, tool: (name: string) => string) {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const junk = (n: number) => Array.from({ length: n }, () => String.fromCharCode(Math.floor(random() * 0x2500))).join("");
  let nextId = 1;
  const call = (id: number, params: unknown) => JSON.stringify({ jsonrpc: "2.0", id, method: "tools/call", params });
  const kinds: Array<() => Fuzzed> = [
    () => ({ kind: "not JSON", text: junk(1 + Math.floor(random() * 40)) }),
    () => {
      const whole = call(nextId++, { name: tool("read_graph"), arguments: {} });
      return { kind: "truncated JSON", text: whole.slice(0, Math.floor(random() * (whole.length - 1))) };
    },
    () => ({ kind: "not an object", text: pick(["1", '"x"', "null", "true", "[]", "[1,2]", '[{"a":1}]', "{}", "[[]]"]) }),
    () => {
      const id = nextId++;
      const shapes = [
        { jsonrpc: "1.0", id, method: "tools/list" },
        { id, method: "tools/list" },
        { jsonrpc: "2.0", id, method: 42 },
        { jsonrpc: "2.0", id, params: {} },
        { jsonrpc: 2, id, method: "ping" },
      ];
      return { kind: "not JSON-RPC", text: JSON.stringify(pick(shapes)) };
    },
    () => {
      const id = nextId++;
      return { kind: "unknown method", text: JSON.stringify({ jsonrpc: "2.0", id, method: `${junk(3)}/${Math.floor(random() * 1e6)}` }), id };
    },
    () => {
      const id = nextId++;
      return { kind: "unknown tool", text: call(id, { name: tool(`no_such_${Math.floor(random() * 1e6)}`), arguments: {} }), id };
    },
    () => {
      const id = nextId++;
      const params = pick<unknown>([
        { name: tool("create_entities"), arguments: { entities: "not a list" } },
        { name: tool("create_entities"), arguments: { entities: [{ name: 5 }] } },
        { name: tool("create_entities"), arguments: {} },
        { name: tool("search_nodes"), arguments: { query: { nested: true } } },
        { name: tool("open_nodes"), arguments: { names: [1, 2, 3] } },
        { name: tool("delete_entities"), arguments: { entityNames: "x" } },
        { name: 12345 },
        {},
      ]);
      return { kind: "schema-invalid arguments", text: call(id, params), id };
    },
    () => {
      const depth = MAX_DEPTH + 1 + Math.floor(random() * 200);
      return { kind: "too deep", text: `{"jsonrpc":"2.0","id":${nextId++},"method":"tools/call","params":{"name":"${tool("read_graph")}","arguments":{"x":${"[".repeat(depth)}${"]".repeat(depth)}}}}` };
    },
  ];
  return {
    next: (): Fuzzed => pick(kinds)(),
    oversized: (): Fuzzed => ({ kind: "oversized", text: call(nextId++, { name: tool("search_nodes"), arguments: { query: "x".repeat(MAX_BODY + 1 + Math.floor(random() * MAX_BODY)) } }) }),
  };
}

interface ErrorBody {
  jsonrpc?: string;
  id?: unknown;
  error?: { code?: unknown; message?: unknown };
  result?: unknown;
}

/**
 * An error a client can act on: a JSON-RPC error with a numeric code and a message that says something,
 * or a tool result flagged `isError` with text saying why (what a live server answers for a tool it
 * does not have, which the gateway lets through since servers may add tools at run time).
 */
function isClearError(reply: ErrorBody | undefined, id?: number): boolean {
  if (!reply || (id !== undefined && reply.id !== id && reply.id !== null)) return false;
  const result = reply.result as { isError?: unknown; content?: Array<{ text?: unknown }> } | undefined;
  if (result) return result.isError === true && String(result.content?.[0]?.text ?? "").length >= 8;
  return typeof reply.error?.code === "number" && typeof reply.error.message === "string" && reply.error.message.length >= 8;
}

/** The JSON-RPC messages in an HTTP body: JSON, or the `data:` lines of an SSE stream. */
function messagesIn(body: string): ErrorBody[] {
  if (body.startsWith("{") || body.startsWith("[")) {
    const value = JSON.parse(body) as ErrorBody | ErrorBody[];
    return Array.isArray(value) ? value : [value];
  }
  return body
    .split("\n")
    .filter((l) => l.startsWith("data:"))
    .map((l) => l.slice(5).trim())
    .filter(Boolean)
    .map((d) => JSON.parse(d) as ErrorBody);
}

describe("fuzz: 10 000+ bad messages across the faces", { timeout: 600_000 }, () => {
  let gateway: Awaited<ReturnType<typeof startReadyGateway>>;
  const agent = new Agent({ keepAlive: true, maxSockets: 8 });
  const tally = new Map<string, number>();
  const count = (face: string, kind: string) => tally.set(`${face} ${kind}`, (tally.get(`${face} ${kind}`) ?? 0) + 1);

  before(async () => {
    gateway = await startReadyGateway({ servers: ["memory"], maxBodyBytes: MAX_BODY, maxJsonDepth: MAX_DEPTH, auditLog: "off" }, { pool: { prestarted: 1, warm: 0 } });
  });
  after(async () => {
    agent.destroy();
    await gateway?.close();
    const total = [...tally.values()].reduce((a, b) => a + b, 0);
    process.stderr.write(`[fuzz] seed ${SEED}: ${total} messages\n`);
  });

  const httpPost = (path: string, body: string, headers: Record<string, string> = {}) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(
        { agent, host: "127.0.0.1", port: gateway.port, path, method: "POST", headers: { "content-type": "application/json", accept: "application/json, text/event-stream", ...headers } },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => (text += c));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
        },
      );
      req.on("error", (error) => reject(new Error(`POST ${path} (${body.length} bytes): ${error.message}`)));
      req.end(body);
    });

  /** Runs `send` over `messages` with a few in flight at once. */
  async function pump(messages: Fuzzed[], send: (m: Fuzzed) => Promise<void>, parallel = 8): Promise<void> {
    let next = 0;
    await Promise.all(Array.from({ length: parallel }, async () => {
      while (next < messages.length) await send(messages[next++]!);
    }));
  }

  async function httpFace(face: string, path: string, tool: (n: string) => string, n: number, headers: Record<string, string> = {}) {
    const gen = generator(prng(SEED ^ face.length), tool);
    const messages = Array.from({ length: n }, (_, i) => (i % 100 === 99 ? gen.oversized() : gen.next()));
    await pump(messages, async (m) => {
      const response = await httpPost(path, m.text, headers);
      count(face, m.kind);
      if (m.kind === "oversized") return assert.equal(response.status, 413, `${face}: oversized body`);
      const replies = messagesIn(response.body);
      assert.ok(replies.length >= 1 && replies.every((r) => isClearError(r, m.id)), `${face} ${m.kind}: ${m.text.slice(0, 200)} -> ${response.status} ${response.body.slice(0, 300)}`);
      assert.ok(response.status >= 400 || m.id !== undefined, `${face} ${m.kind}: an error reply for a message without an id comes with an HTTP error status`);
    });
  }

  test("Streamable HTTP, in a session on one server and stateless on the aggregate", async () => {
    const session = await sessionOf("/servers/memory/mcp");
    assert.match(session, /^[\w-]{8,}$/);
    await httpFace("streamable-session", "/servers/memory/mcp", (n) => n, 3_000, { "mcp-session-id": session, "mcp-protocol-version": "2025-11-25" });
    await httpFace("streamable-stateless", "/mcp", (n) => `memory__${n}`, 1_500);
  });

  /** Opens a session (raw, so the id can be read) and says it is initialized. */
  async function sessionOf(path: string): Promise<string> {
    const id = await new Promise<string>((resolve, reject) => {
      const req = request(
        { agent, host: "127.0.0.1", port: gateway.port, path, method: "POST", headers: { "content-type": "application/json", accept: "application/json, text/event-stream" } },
        (res) => {
          res.resume();
          res.on("end", () => resolve(String(res.headers["mcp-session-id"])));
        },
      );
      req.on("error", reject);
      req.end(JSON.stringify({ jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "fuzz", version: "0" } } }));
    });
    await httpPost(path, JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }), { "mcp-session-id": id, "mcp-protocol-version": "2025-11-25" });
    return id;
  }

  test("legacy SSE: bad POSTs get 4xx, bad requests that parse get their error on the stream", async () => {
    const controller = new AbortController();
    const stream = await fetch(`http://127.0.0.1:${gateway.port}/servers/memory/sse`, { headers: { accept: "text/event-stream" }, signal: controller.signal });
    const reader = stream.body!.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const streamed = new Map<unknown, ErrorBody>();
    let endpoint: string | undefined;
    const reading = (async () => {
      for (;;) {
        const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
        if (done) return;
        buffer += decoder.decode(value, { stream: true });
        let end: number;
        while ((end = buffer.indexOf("\n\n")) !== -1) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
          if (/^event: endpoint/m.test(event)) endpoint = data;
          else if (data) {
            const message = JSON.parse(data) as ErrorBody;
            streamed.set(message.id, message);
          }
        }
      }
    })();
    while (!endpoint) await new Promise((r) => setTimeout(r, 10));
    const gen = generator(prng(SEED + 1), (n) => n);
    const messages = Array.from({ length: 3_000 }, (_, i) => (i % 100 === 99 ? gen.oversized() : gen.next()));
    const awaited: Fuzzed[] = [];
    await pump(messages, async (m) => {
      const response = await httpPost(endpoint!, m.text);
      count("sse", m.kind);
      if (m.kind === "oversized") return assert.equal(response.status, 413);
      if (response.status === 202) {
        assert.ok(m.id !== undefined, `sse ${m.kind} accepted without an id to answer: ${m.text.slice(0, 200)}`);
        awaited.push(m);
        return;
      }
      assert.ok(response.status >= 400 && isClearError(JSON.parse(response.body) as ErrorBody, m.id), `sse ${m.kind}: ${response.status} ${response.body.slice(0, 300)}`);
    });
    const deadline = Date.now() + 60_000;
    while (awaited.some((m) => !streamed.has(m.id)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const m of awaited) assert.ok(isClearError(streamed.get(m.id), m.id), `sse ${m.kind} id ${m.id}: ${JSON.stringify(streamed.get(m.id))}`);
    controller.abort();
    await reading;
  });

  test("WebSocket: every bad frame gets an error frame and the socket stays; an oversized one closes it (1009)", async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${gateway.port}/ws`, "mcp");
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    const replies: ErrorBody[] = [];
    ws.on("message", (data) => replies.push(JSON.parse(data.toString()) as ErrorBody));
    const gen = generator(prng(SEED + 2), (n) => `memory__${n}`);
    const messages = Array.from({ length: 3_000 }, () => gen.next());
    for (const [i, m] of messages.entries()) {
      ws.send(m.text);
      count("websocket", m.kind);
      while (replies.length < i - 200) await new Promise((r) => setTimeout(r, 5)); // keep the backlog bounded
    }
    const deadline = Date.now() + 60_000;
    while (replies.length < messages.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(replies.length, messages.length, "one reply per frame");
    assert.ok(replies.every((r) => isClearError(r)), JSON.stringify(replies.find((r) => !isClearError(r))));
    const withIds = messages.filter((m) => m.id !== undefined).map((m) => m.id);
    const replyIds = new Set(replies.map((r) => r.id));
    assert.ok(withIds.every((id) => replyIds.has(id)), "every request with an id got its own error");
    assert.equal(ws.readyState, WebSocket.OPEN);
    const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)));
    ws.send(gen.oversized().text);
    count("websocket", "oversized");
    assert.equal(await closed, 1009);
  });

  test("afterwards the gateway is up and a well-formed call succeeds on every face", async () => {
    const total = [...tally.values()].reduce((a, b) => a + b, 0);
    assert.ok(total >= 10_000, `${total} messages sent`);
    assert.equal((await fetch(`http://127.0.0.1:${gateway.port}/healthz`)).status, 200);
    for (const path of ["/servers/memory/mcp", "/mcp"]) {
      const client = await connect(`http://127.0.0.1:${gateway.port}${path}`);
      const name = path === "/mcp" ? "memory__read_graph" : "read_graph";
      const result = (await client.callTool({ name, arguments: {} })) as CallToolResult;
      assert.notEqual(result.isError, true);
      await client.close();
    }
    const ws = new WebSocket(`ws://127.0.0.1:${gateway.port}/servers/memory/ws`, "mcp");
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    const reply = new Promise<ErrorBody>((resolve) => ws.on("message", (d) => resolve(JSON.parse(d.toString()) as ErrorBody)));
    ws.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "read_graph", arguments: {} } }));
    assert.ok((await reply).result, "a tools/call over WebSocket is answered with a result");
    ws.close();
  });
});
