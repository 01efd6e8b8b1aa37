import assert from "node:assert/strict";
import { request, type IncomingMessage } from "node:http";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { eventually, startReadyGateway } from "./helpers.js";

// The Streamable HTTP face is served straight on node:http; these are its answers as a client sees them on
// the wire, from a plain HTTP client (the SDK Client hides status codes and framing).

interface Reply {
  status: number;
  headers: IncomingMessage["headers"];
  body: string;
}

interface SseEvent {
  id?: string;
  event?: string;
  data: string;
}

const ACCEPT = "application/json, text/event-stream";

/**
 * The response cut after its first SSE event (the priming event, an id and no data), ended as a dropped
 * connection would end it, and that event's id.
 */
async function firstEventOnly(response: Response): Promise<{ response: Response; id: string | undefined }> {
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  await reader.cancel();
  const first = text.slice(0, text.indexOf("\n\n") + 2);
  const id = /^id: ?(.*)$/m.exec(first)?.[1];
  return { response: new Response(first, { status: response.status, headers: response.headers }), id };
}

describe("Streamable HTTP on the wire", { timeout: 180_000 }, () => {
  let gateway: Awaited<ReturnType<typeof startReadyGateway>>;
  let path: string;
  let session: string;

  /** One HTTP request on its own connection, read to its end. */
  const send = (method: string, headers: Record<string, string>, body?: string, at = path): Promise<Reply> =>
    new Promise((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port: gateway.port, path: at, method, headers: { host: `127.0.0.1:${gateway.port}`, ...headers } }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (text += chunk));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      });
      req.on("error", reject);
      req.end(body);
    });
  const post = (body: string, headers: Record<string, string> = {}) =>
    send("POST", { "content-type": "application/json", accept: ACCEPT, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25", ...headers }, body);
  const call = (id: number, name: string, meta?: Record<string, unknown>) =>
    JSON.stringify({ jsonrpc: "2.0", id, method: "tools/call", params: { name, arguments: {}, ...(meta ? { _meta: meta } : {}) } });
  const errorOf = (reply: Reply) => (JSON.parse(reply.body) as { id: unknown; error: { code: number; message: string } });

  /**
   * Opens an SSE response and hands each event over as it arrives; `stop` returning true destroys the
   * connection there (a client whose stream broke).
   */
  const stream = (method: string, headers: Record<string, string>, body: string | undefined, stop: (e: SseEvent) => boolean) =>
    new Promise<{ status: number; events: SseEvent[]; chunks: string[]; ended: boolean }>((resolve, reject) => {
      const events: SseEvent[] = [];
      const chunks: string[] = [];
      const req = request(
        { host: "127.0.0.1", port: gateway.port, path, method, headers: { host: `127.0.0.1:${gateway.port}`, accept: ACCEPT, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25", ...headers } },
        (res) => {
          let buffer = "";
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => {
            chunks.push(chunk);
            buffer += chunk;
            let end: number;
            while ((end = buffer.indexOf("\n\n")) !== -1) {
              const event = parseEvent(buffer.slice(0, end));
              buffer = buffer.slice(end + 2);
              if (!event) continue;
              events.push(event);
              if (stop(event)) {
                req.destroy();
                return resolve({ status: res.statusCode ?? 0, events, chunks, ended: false });
              }
            }
          });
          res.on("end", () => resolve({ status: res.statusCode ?? 0, events, chunks, ended: true }));
        },
      );
      req.on("error", reject);
      req.end(body);
    });

  before(async () => {
    gateway = await startReadyGateway({ servers: ["conformance"], maxBodyBytes: 64 * 1024 });
    path = `/servers/conformance/mcp`;
    const init = await send(
      "POST",
      { "content-type": "application/json", accept: ACCEPT },
      JSON.stringify({ jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "wire", version: "0" } } }),
    );
    assert.equal(init.status, 200);
    session = String(init.headers["mcp-session-id"]);
    assert.equal((await post(JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }))).status, 202);
  });
  after(() => gateway.close());

  test("a request's progress streams as SSE events with ids before its result, which ends the stream", async () => {
    const reply = await stream("POST", { "content-type": "application/json" }, call(1, "test_tool_with_progress", { progressToken: "p1" }), () => false);
    assert.equal(reply.status, 200);
    assert.ok(reply.ended);
    const [priming, ...messages] = reply.events;
    assert.equal(priming?.data, "", "a priming event (an id, no data) comes first");
    assert.ok(priming?.id);
    assert.ok(messages.every((e) => e.event === "message" && e.id), "every message carries an event id");
    const parsed = messages.map((e) => JSON.parse(e.data) as { method?: string; id?: number; params?: { progress: number } });
    assert.deepEqual(parsed.map((m) => m.method ?? `result ${m.id}`), ["notifications/progress", "notifications/progress", "notifications/progress", "result 1"]);
    assert.deepEqual(parsed.slice(0, 3).map((m) => m.params?.progress), [0, 50, 100]);
  });

  test("a stream delivered whole is not kept for resumption (the session holds only what a broken stream may ask for)", async () => {
    const reply = await stream("POST", { "content-type": "application/json" }, call(18, "test_tool_with_progress", { progressToken: "p18" }), () => false);
    assert.ok(reply.ended);
    const priming = reply.events[0]!.id!;
    const resumed = await send("GET", { accept: ACCEPT, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25", "last-event-id": priming });
    assert.equal(resumed.status, 400);
    assert.match(resumed.body, /unknown to this session or too old/);
  });

  test("a slow call's stream opens before its answer: headers and the priming event are held back only briefly", async () => {
    // test_reconnection answers after 100 ms and sends nothing before; the stream must not stay silent till then.
    const reply = await stream("POST", { "content-type": "application/json" }, call(16, "test_reconnection"), () => false);
    assert.equal(reply.chunks[0]?.includes('"id":16'), false, "the priming event came in a write of its own, before the answer");
    assert.deepEqual(reply.events.map((e) => (e.data ? (JSON.parse(e.data) as { id: number }).id : "priming")), ["priming", 16]);
  });

  test("a request answered within the hold, with nothing before, gets one JSON body, in a session too", async () => {
    // ping is answered by the gateway itself: always within the hold, whatever the machine's load.
    const reply = await post(JSON.stringify({ jsonrpc: "2.0", id: 17, method: "ping" }));
    assert.equal(reply.status, 200);
    assert.match(String(reply.headers["content-type"]), /^application\/json/);
    assert.equal(reply.headers["mcp-session-id"], session);
    assert.equal((JSON.parse(reply.body) as { id: number }).id, 17);
  });

  test("the SDK Client takes an error answer as final: no reconnect to resume its stream", async () => {
    const requests: string[] = [];
    let primingId: string | undefined;
    const transport = new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${gateway.port}${path}`), {
      fetch: (async (url: string | URL, init?: RequestInit) => {
        requests.push(`${init?.method ?? "GET"} ${new Headers(init?.headers).get("last-event-id") ?? ""}`.trim());
        const response = await fetch(url, init);
        if (!String(init?.body).includes("test_reconnection")) return response;
        const cut = await firstEventOnly(response);
        primingId = cut.id;
        return cut.response;
      }) as typeof fetch,
    });
    const client = new Client({ name: "wire-sdk", version: "0" });
    const errors: string[] = [];
    client.onerror = (error) => errors.push(error.message);
    await client.connect(transport);
    await eventually(() => requests.includes("GET"), "the client's own GET stream to open");
    requests.length = 0;
    for (let i = 0; i < 3; i++) await assert.rejects(client.callTool({ name: "no_such_tool", arguments: {} }), /Unknown tool/);
    // The control: a call whose stream breaks after its priming event is resumed (GET with Last-Event-ID)
    // after the SDK's first reconnect delay. A reconnect for an error answer would have been scheduled
    // before it, with the same delay, so it would have come first.
    await client.callTool({ name: "test_reconnection", arguments: {} });
    assert.ok(primingId);
    assert.deepEqual(requests, ["POST", "POST", "POST", "POST", `GET ${primingId}`]);
    assert.deepEqual(errors, []);
    await transport.terminateSession();
    await client.close();
  });

  test("a client whose stream broke resumes it with Last-Event-ID and gets what followed, result included", async () => {
    const broken = await stream("POST", { "content-type": "application/json" }, call(2, "test_tool_with_progress", { progressToken: "p2" }), (e) => e.data.includes('"progress":0'));
    assert.equal(broken.ended, false);
    const last = broken.events.at(-1)!.id!;
    const resumed = await stream("GET", { "last-event-id": last }, undefined, (e) => e.data.includes('"id":2'));
    assert.equal(resumed.status, 200);
    const parsed = resumed.events.map((e) => JSON.parse(e.data) as { params?: { progress: number }; id?: number; result?: unknown });
    assert.deepEqual(parsed.map((m) => m.params?.progress ?? `result ${m.id}`), [50, 100, "result 2"]);
    const unknown = await send("GET", { accept: ACCEPT, "mcp-session-id": session, "last-event-id": "nope:1" });
    assert.equal(unknown.status, 400);
  });

  test("a stateless request (no session) gets one JSON body", async () => {
    const reply = await send("POST", { "content-type": "application/json", accept: ACCEPT }, call(3, "test_simple_text"));
    assert.equal(reply.status, 200);
    assert.match(String(reply.headers["content-type"]), /^application\/json/);
    assert.equal((JSON.parse(reply.body) as { id: number }).id, 3);
  });

  test("a notification gets 202 with no body", async () => {
    const reply = await post(JSON.stringify({ jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: 99 } }));
    assert.deepEqual([reply.status, reply.body], [202, ""]);
  });

  test("bad input gets a clear JSON-RPC error before anything is handled", async () => {
    const notJson = await post("{nope");
    assert.deepEqual([notJson.status, errorOf(notJson).error.code], [400, -32700]);
    const notRpc = await post(JSON.stringify({ hello: "world" }));
    assert.deepEqual([notRpc.status, errorOf(notRpc).error.code], [400, -32700]);
    assert.match(errorOf(notRpc).error.message, /"jsonrpc": "2.0"/);
    const version = await post(call(6, "test_simple_text"), { "mcp-protocol-version": "1999-01-01" });
    assert.equal(version.status, 400);
    assert.match(errorOf(version).error.message, /Unsupported protocol version: 1999-01-01/);
    const accept = await post(call(7, "test_simple_text"), { accept: "application/json" });
    assert.equal(accept.status, 406);
    const type = await post(call(8, "test_simple_text"), { "content-type": "text/plain" });
    assert.equal(type.status, 415);
    const big = await post(JSON.stringify({ jsonrpc: "2.0", id: 9, method: "ping", params: { pad: "x".repeat(70 * 1024) } }));
    assert.deepEqual([big.status, errorOf(big).error.message], [413, "Request body larger than 65536 bytes"]);
    const again = await post(JSON.stringify({ jsonrpc: "2.0", id: 10, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "x", version: "0" } } }));
    assert.equal(again.status, 400);
    const put = await send("PUT", { "mcp-session-id": session });
    assert.deepEqual([put.status, put.headers.allow], [405, "GET, POST, DELETE"]);
  });

  test("a body is read whole however it comes: empty, with Content-Length, or chunked without one", async () => {
    const empty = await post("", { "content-length": "0" });
    assert.deepEqual([empty.status, errorOf(empty).error.code], [400, -32700]);
    const chunked = await post(call(11, "test_simple_text"), { "transfer-encoding": "chunked" });
    assert.equal(chunked.status, 200);
    // JSON if answered within the hold, else an SSE stream: the answer is in it either way.
    const answers = String(chunked.headers["content-type"]).startsWith("application/json")
      ? [chunked.body]
      : chunked.body.split("\n").filter((line) => line.startsWith("data: {")).map((line) => line.slice(6));
    const answer = answers.map((text) => JSON.parse(text) as { id?: number; result?: unknown }).find((m) => m.id === 11);
    assert.ok(answer?.result, `an answer to request 11 in ${chunked.body}`);
  });

  test("unknown sessions get 404, foreign Hosts and Origins 403, unknown servers 404", async () => {
    const unknown = await post(call(11, "test_simple_text"), { "mcp-session-id": "no-such-session" });
    assert.equal(unknown.status, 404);
    assert.match(errorOf(unknown).error.message, /Session not found/);
    const host = await post(call(12, "test_simple_text"), { host: "evil.example" });
    assert.equal(host.status, 403);
    const origin = await post(call(13, "test_simple_text"), { origin: "http://evil.example" });
    assert.equal(origin.status, 403);
    const elsewhere = await send("POST", { "content-type": "application/json", accept: ACCEPT }, call(14, "x"), "/servers/nope/mcp");
    assert.deepEqual([elsewhere.status, errorOf(elsewhere).error.message], [404, "No hosted server named 'nope'"]);
  });

  test("a second GET stream is refused (409); DELETE ends the session, after which it is 404", async () => {
    const first = request({ host: "127.0.0.1", port: gateway.port, path, headers: { accept: "text/event-stream", "mcp-session-id": session } });
    const opened = new Promise<IncomingMessage>((resolve, reject) => first.on("response", resolve).on("error", reject));
    first.end();
    const standalone = await opened;
    assert.equal(standalone.headers["content-type"], "text/event-stream");
    const second = await send("GET", { accept: "text/event-stream", "mcp-session-id": session });
    assert.equal(second.status, 409);
    const ended = new Promise((resolve) => standalone.on("end", resolve).resume());
    assert.equal((await send("DELETE", { "mcp-session-id": session })).status, 200);
    await ended; // closing the session ends its streams
    assert.equal((await post(call(15, "test_simple_text"))).status, 404);
  });
});

function parseEvent(text: string): SseEvent | undefined {
  const event: SseEvent = { data: "" };
  let fields = 0;
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon === 0) continue; // a comment (keep-alive)
    const name = colon === -1 ? line : line.slice(0, colon);
    const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (name === "id") event.id = value;
    else if (name === "event") event.event = value;
    else if (name === "data") event.data += value;
    else continue;
    fields++;
  }
  return fields > 0 ? event : undefined;
}
