/**
 * API keys and tenants, tried from outside over real sockets: every face refuses a missing or wrong
 * key, and nothing of one tenant (sessions, servers, resources, calls, traces) is reachable by another.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { tenantsReloads, type TenantsReloadRecord } from "../src/auth/tenants-watcher.js";
import { resolveGatewayConfig } from "../src/config/gateway.js";
import { REPO_ROOT } from "../src/main.js";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { connectAs, endSession, heldGetStream, heldLegacySse, heldWebSocket, INITIALIZE, post, tenantsFileWith } from "./auth-helpers.js";
import { eventually, nextEvent, serversDirWith, startReadyGateway } from "./helpers.js";
import { scratchDir } from "./scratch-dir.js";

const execFileAsync = promisify(execFile);

describe("API keys and tenants", { timeout: 240_000 }, () => {
  let gateway: Awaited<ReturnType<typeof startReadyGateway>>;
  let keys: Record<string, string>;
  let auditPath: string;
  let base: string;
  const as = (tenant: string) => ({ authorization: `Bearer ${keys[tenant]}` });

  before(async () => {
    const file = await tenantsFileWith({
      tenants: { acme: { servers: ["memory", "exec"] }, globex: { servers: ["memory", "everything"] }, ops: { admin: true } },
    });
    keys = file.keys;
    auditPath = join(file.dir, "audit.log");
    gateway = await startReadyGateway(
      { servers: ["memory", "exec", "everything"], tenantsFile: file.path, auditLog: auditPath },
      { pool: { prestarted: 0, warm: 0 } },
    );
    base = `http://127.0.0.1:${gateway.port}`;
  });
  after(async () => {
    await gateway?.close();
  });

  test("binding beyond loopback without authentication is refused at start, unless overridden", () => {
    const serversDir = join(import.meta.dirname, "..", "servers");
    assert.throws(() => resolveGatewayConfig({ serversDir, host: "0.0.0.0" }), /refusing to listen on 0\.0\.0\.0 without authentication.*--insecure-no-auth/);
    assert.equal(resolveGatewayConfig({ serversDir, host: "0.0.0.0", insecureNoAuth: true }).host, "0.0.0.0");
    assert.equal(resolveGatewayConfig({ serversDir, host: "0.0.0.0", tenantsFile: "/etc/mcpvisor/tenants.json" }).host, "0.0.0.0");
  });

  test("every HTTP face and the APIs answer 401 with a Bearer challenge to a missing or wrong key", async () => {
    const routes: Array<[string, RequestInit]> = [
      ["/mcp", { method: "POST", body: JSON.stringify(INITIALIZE) }],
      ["/servers/memory/mcp", { method: "POST", body: JSON.stringify(INITIALIZE) }],
      ["/servers/memory/mcp", { method: "GET" }],
      ["/sse", { method: "GET" }],
      ["/servers/memory/sse", { method: "GET" }],
      ["/messages?sessionId=x", { method: "POST", body: "{}" }],
      ["/api/status", { method: "GET" }],
      ["/api/traces", { method: "GET" }],
      ["/metrics", { method: "GET" }],
    ];
    for (const [path, init] of routes) {
      for (const authorization of [undefined, "Bearer mcpv_not-a-key", "Basic dXNlcjpwYXNz", `Bearer ${keys.acme}x`]) {
        const headers: Record<string, string> = { "content-type": "application/json", accept: "application/json, text/event-stream" };
        if (authorization) headers.authorization = authorization;
        const response = await fetch(`${base}${path}`, { ...init, headers });
        assert.equal(response.status, 401, `${init.method} ${path} with ${authorization ?? "no credential"}`);
        assert.match(response.headers.get("www-authenticate") ?? "", /^Bearer /);
        const body = (await response.json()) as { error: { code: number; message: string } };
        assert.equal(body.error.code, -32001);
      }
    }
    // Health stays open for probes; the status page's HTML carries no data.
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.equal((await fetch(`${base}/`)).status, 200);
  });

  test("the WebSocket face refuses an upgrade without a valid key, and accepts one with it", async () => {
    const open = (headers: Record<string, string>) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(`ws://127.0.0.1:${gateway.port}/ws`, "mcp", { headers });
        ws.once("open", () => {
          ws.close();
          resolve(101);
        });
        ws.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
        ws.once("error", () => undefined);
      });
    assert.equal(await open({}), 401);
    assert.equal(await open({ authorization: "Bearer mcpv_wrong" }), 401);
    assert.equal(await open(as("acme")), 101);
    const forbidden = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${gateway.port}/servers/exec/ws`, "mcp", { headers: as("globex") });
      ws.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
      ws.once("open", () => resolve(101));
      ws.once("error", () => undefined);
    });
    assert.equal(forbidden, 403, "globex may not use exec");
  });

  test("a session id of one tenant is 404 to another, on every method and on the SSE face", async () => {
    const acme = await connectAs(`${base}/servers/memory/mcp`, keys.acme!);
    await acme.callTool({ name: "create_entities", arguments: { entities: [{ name: "acme-secret", entityType: "note", observations: ["only acme"] }] } });
    const sessionId = (acme.transport as { sessionId?: string }).sessionId!;
    const call = { jsonrpc: "2.0", id: 9, method: "tools/call", params: { name: "read_graph", arguments: {} } };
    for (const method of ["POST", "GET", "DELETE"]) {
      const response = await fetch(`${base}/servers/memory/mcp`, {
        method,
        headers: { ...as("globex"), "mcp-session-id": sessionId, "content-type": "application/json", accept: "application/json, text/event-stream", "mcp-protocol-version": "2025-11-25" },
        ...(method === "POST" ? { body: JSON.stringify(call) } : {}),
      });
      assert.equal(response.status, 404, `${method} with another tenant's session id`);
      assert.doesNotMatch(await response.text(), /acme-secret/);
    }
    // The session is untouched: its owner still sees its data.
    const graph = (await acme.callTool({ name: "read_graph", arguments: {} })) as CallToolResult;
    assert.match(JSON.stringify(graph), /acme-secret/);
    // Globex's own session on the same server is its own clone.
    const globex = await connectAs(`${base}/servers/memory/mcp`, keys.globex!);
    assert.doesNotMatch(JSON.stringify(await globex.callTool({ name: "read_graph", arguments: {} })), /acme-secret/);

    // Legacy SSE: the messages URL of acme's stream, used with globex's key.
    const controller = new AbortController();
    const stream = await fetch(`${base}/servers/memory/sse`, { headers: { ...as("acme"), accept: "text/event-stream" }, signal: controller.signal });
    assert.equal(stream.status, 200);
    const reader = stream.body!.getReader();
    let text = "";
    while (!/sessionId=([\w-]+)/.test(text)) text += new TextDecoder().decode((await reader.read()).value);
    const sseSession = /sessionId=([\w-]+)/.exec(text)![1]!;
    const crossed = await post(`${base}/servers/memory/messages?sessionId=${sseSession}`, INITIALIZE, as("globex"));
    assert.equal(crossed.status, 404);
    const own = await post(`${base}/servers/memory/messages?sessionId=${sseSession}`, INITIALIZE, as("acme"));
    assert.equal(own.status, 202);
    controller.abort();
    await acme.close();
    await globex.close();
  });

  test("a tenant sees and reaches only its own servers: per-server routes, the aggregate, resources", async () => {
    const forbidden = await post(`${base}/servers/exec/mcp`, INITIALIZE, as("globex"));
    assert.equal(forbidden.status, 403);
    assert.match(((await forbidden.json()) as { error: { message: string } }).error.message, /may not use server 'exec'/);

    const globex = await connectAs(`${base}/mcp`, keys.globex!);
    const tools = (await globex.listTools()).tools.map((t) => t.name);
    assert.ok(tools.some((t) => t.startsWith("memory__")) && tools.some((t) => t.startsWith("everything__")));
    assert.ok(!tools.some((t) => t.startsWith("exec__")), "exec is not listed for globex");
    const run = (await globex.callTool({ name: "exec__run", arguments: { command: "id" } }).catch((e: Error) => e)) as Error;
    assert.match(String(run.message ?? JSON.stringify(run)), /Unknown tool 'exec__run'/);
    const resources = (await globex.listResources()).resources;
    assert.ok(resources.length > 0, "globex lists everything's resources");
    await globex.close();

    const acme = await connectAs(`${base}/mcp`, keys.acme!);
    const acmeUris = new Set((await acme.listResources()).resources.map((r) => r.uri));
    const foreign = resources.find((r) => !acmeUris.has(r.uri) && r.uri.startsWith("demo://"));
    assert.ok(foreign, "everything lists resources acme does not see");
    const read = (await acme.readResource({ uri: foreign.uri }).catch((e: Error) => e)) as Error;
    assert.match(read.message, /Unknown resource/, "acme cannot read a resource of a server it may not use");
    await acme.close();
  });

  test("status and trace APIs show a tenant only its own; an admin sees all", async () => {
    const acme = await connectAs(`${base}/servers/exec/mcp`, keys.acme!);
    await acme.callTool({ name: "run", arguments: { command: "echo acme-call" } });
    await acme.close();
    const statusOf = async (tenant: string) => (await (await fetch(`${base}/api/status`, { headers: as(tenant) })).json()) as {
      viewer: { tenant: string; admin: boolean };
      servers: Array<{ name: string; leased?: unknown }>;
      calls: Array<{ tenant: string; server?: string; traceId?: string }>;
    };
    const acmeView = await statusOf("acme");
    const acmeCall = acmeView.calls.find((c) => c.server === "exec");
    assert.ok(acmeCall?.traceId, "acme sees its call, with its trace id");
    assert.deepEqual(new Set(acmeView.servers.map((s) => s.name)), new Set(["memory", "exec"]));
    assert.ok(acmeView.servers.every((s) => s.leased === undefined), "no pool-wide sandbox detail for a tenant");

    const globexView = await statusOf("globex");
    assert.ok(globexView.calls.every((c) => c.tenant === "globex"), "globex sees no call of another tenant");
    assert.ok(!globexView.servers.some((s) => s.name === "exec"));
    const crossTrace = (await (await fetch(`${base}/api/traces?traceId=${acmeCall.traceId}`, { headers: as("globex") })).json()) as { traces: unknown[] };
    assert.deepEqual(crossTrace.traces, [], "acme's trace is not found by globex");
    const allTraces = (await (await fetch(`${base}/api/traces?limit=200`, { headers: as("globex") })).json()) as { traces: Array<{ spans: Array<{ attributes: Record<string, unknown> }> }> };
    assert.ok(allTraces.traces.every((t) => t.spans.every((s) => s.attributes["mcpvisor.tenant"] === "globex")));

    const opsView = await statusOf("ops");
    assert.equal(opsView.viewer.admin, true);
    assert.ok(opsView.calls.some((c) => c.tenant === "acme") && opsView.calls.some((c) => c.tenant === "globex"));
    const ownTrace = (await (await fetch(`${base}/api/traces?traceId=${acmeCall.traceId}`, { headers: as("ops") })).json()) as { traces: unknown[] };
    assert.equal(ownTrace.traces.length, 1);

    assert.equal((await fetch(`${base}/metrics`, { headers: as("acme") })).status, 403, "metrics are for admins");
    assert.equal((await fetch(`${base}/metrics`, { headers: as("ops") })).status, 200);
  });

  test("the audit log records who called which tool, and refusals, and never a key", async () => {
    const acme = await connectAs(`${base}/servers/exec/mcp`, keys.acme!);
    await acme.callTool({ name: "run", arguments: { command: "true" } });
    await acme.close();
    await post(`${base}/mcp`, INITIALIZE, { authorization: "Bearer mcpv_wrong" });
    // A 2026-07-28 request refused at the edge is audited with what it was for, read from its headers.
    const modern = { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "exec__run", arguments: {}, _meta: { "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {} } } };
    await post(`${base}/mcp`, modern, { authorization: "Bearer mcpv_wrong2", "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "exec__run" });
    // The audit stream is written asynchronously: wait for both lines to land.
    let text = "";
    let lines: Array<Record<string, unknown>> = [];
    const landed = () =>
      lines.some((l) => l.event === "refused" && l.method === "tools/call") && lines.some((l) => l.event === "tools/call" && l.tool === "run");
    for (let i = 0; i < 100 && !landed(); i++) {
      await new Promise((r) => setTimeout(r, 50));
      text = await readFile(auditPath, "utf8").catch(() => "");
      lines = text.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    }
    const call = lines.find((l) => l.event === "tools/call" && l.tenant === "acme" && l.server === "exec" && l.tool === "run");
    assert.ok(call, "a tools/call line for acme's run");
    assert.equal(call.subject, "key:acme-key");
    assert.equal(call.outcome, "ok");
    assert.match(String(call.traceId), /^[0-9a-f]{32}$/);
    assert.match(String(call.time), /^\d{4}-\d\d-\d\dT/);
    assert.ok(lines.some((l) => l.event === "refused" && l.status === 401 && l.path === "/mcp"));
    assert.ok(lines.some((l) => l.event === "refused" && l.status === 401 && l.method === "tools/call" && l.name === "exec__run"), "the 2026 refusal names its method and tool");
    for (const key of Object.values(keys)) assert.ok(!text.includes(key), "no key in the audit log");
    assert.ok(!text.includes("mcpv_wrong"), "not even a wrong one");
  });
});

test("a saved session comes back after a restart only for its own tenant", { timeout: 180_000 }, async () => {
  const file = await tenantsFileWith({ tenants: { acme: {}, globex: {} } });
  const serversDir = await serversDirWith({ memory: (m) => ({ timeouts: { ...m.timeouts, idleSuspendMs: 500 } }) });
  const config = { servers: ["memory"], serversDir, tenantsFile: file.path, auditLog: "off" };
  let gateway = await startReadyGateway(config, { pool: { prestarted: 0, warm: 0 } });
  const url = () => `http://127.0.0.1:${gateway.port}/servers/memory/mcp`;
  const resume = async (tenant: string, sessionId: string) => {
    const client = new Client({ name: "resumer", version: "0" });
    const transport = new StreamableHTTPClientTransport(new URL(url()), { sessionId, requestInit: { headers: { authorization: `Bearer ${file.keys[tenant]}` } } });
    await client.connect(transport); // with a session id the SDK client skips initialize
    return client;
  };
  try {
    const acme = await connectAs(url(), file.keys.acme!);
    await acme.callTool({ name: "create_entities", arguments: { entities: [{ name: "saved-for-acme", entityType: "t", observations: ["x"] }] } });
    const sessionId = (acme.transport as { sessionId?: string }).sessionId!;
    await eventually(async () => (await gateway.router.tenantUsage("acme")).suspendedSessions === 1, "acme's session to be suspended and saved", 20_000);
    await gateway.close(); // what is suspended stays on disk
    gateway = await startReadyGateway(config, { pool: { prestarted: 0, warm: 0 } });

    const intruder = await resume("globex", sessionId);
    await assert.rejects(intruder.callTool({ name: "read_graph", arguments: {} }), /404|Session not found/);
    await intruder.close();
    const owner = await resume("acme", sessionId);
    assert.match(JSON.stringify(await owner.callTool({ name: "read_graph", arguments: {} })), /saved-for-acme/, "the intruder's try left it intact");
    await endSession(owner);
  } finally {
    await gateway.close();
  }
});

test("the tenants file is the gate: with no keys nobody is in; keys added and revoked take effect without a restart", { timeout: 120_000 }, async () => {
  const dir = await scratchDir("mcpv-keys");
  const path = join(dir, "tenants.json");
  await writeFile(path, JSON.stringify({ tenants: {} }));
  const gateway = await startReadyGateway({ servers: ["memory"], tenantsFile: path, auditLog: "off" }, { pool: { prestarted: 0, warm: 0 } });
  const url = `http://127.0.0.1:${gateway.port}/servers/memory/mcp`;
  const statusWith = async (key: string) => (await post(url, INITIALIZE, { authorization: `Bearer ${key}` })).status;
  try {
    assert.equal((await post(url, INITIALIZE)).status, 401, "a tenants file without keys lets nobody in");

    // The CLI adds a key (a real process, as an operator runs it); the running gateway picks it up.
    const { stdout } = await execFileAsync(process.execPath, [join(REPO_ROOT, "bin", "mcpvisor"), "keys", "add", "--file", path, "--tenant", "acme", "--id", "acme-laptop"]);
    const key = stdout.trim();
    assert.match(key, /^mcpv_[\w-]{40,}$/);
    assert.ok(!(await readFile(path, "utf8")).includes(key), "only the key's hash is stored");
    await eventually(async () => (await statusWith(key)) === 200, "the new key to be accepted");

    // A file that does not parse is refused (seen happen, not waited out); the last good one stays in force.
    const refused = nextEvent<TenantsReloadRecord>(tenantsReloads, "the invalid file to be refused", (r) => r.path === path && r.outcome === "refused");
    await writeFile(path, "{ not json");
    await refused;
    assert.equal(await statusWith(key), 200);

    // Revoked: the key is gone from the file, and from the gateway.
    await writeFile(path, JSON.stringify({ tenants: { acme: {} }, keys: [] }));
    await eventually(async () => (await statusWith(key)) === 401, "the revoked key to be refused");
  } finally {
    await gateway.close();
  }
});

test("connections opened with a key end when it is revoked: WebSocket, Streamable HTTP GET stream, legacy SSE", { timeout: 120_000 }, async () => {
  const file = await tenantsFileWith({ tenants: { acme: {}, globex: {} } });
  const gateway = await startReadyGateway({ servers: ["memory"], tenantsFile: file.path, auditLog: "off" }, { pool: { prestarted: 0, warm: 0 } });
  const base = `http://127.0.0.1:${gateway.port}`;
  const open = (tenant: string) => {
    const authorization = `Bearer ${file.keys[tenant]}`;
    return Promise.all([heldWebSocket(base, authorization), heldGetStream(base, authorization), heldLegacySse(base, authorization)]);
  };
  const [acme, globex] = [await open("acme"), await open("globex")];
  try {
    const tenants = JSON.parse(await readFile(file.path, "utf8")) as { keys: { tenant: string }[] };
    await writeFile(file.path, JSON.stringify({ ...tenants, keys: tenants.keys.filter((k) => k.tenant !== "acme") }));
    const within = (ms: number) => new Promise<string>((resolve) => setTimeout(() => resolve("still open"), ms));
    for (const connection of acme) {
      const how = await Promise.race([connection.ended, within(5_000)]);
      assert.notEqual(how, "still open", `${connection.what} opened with the revoked key is ended`);
      if (connection.what === "WebSocket") assert.equal(how, "1008 the API key was revoked");
    }
    for (const connection of globex) {
      assert.equal(await Promise.race([connection.ended, within(300)]), "still open", `${connection.what} of another key stays open`);
    }
  } finally {
    for (const connection of [...acme, ...globex]) connection.close();
    await gateway.close();
  }
});

test("the CLI refuses to listen beyond loopback without authentication, and says so loudly when told to anyway", { timeout: 120_000 }, async () => {
  const cli = join(REPO_ROOT, "bin", "mcpvisor");
  const refused = await execFileAsync(process.execPath, [cli, "start", "--host", "0.0.0.0", "--port", "0"]).then(
    () => ({ code: 0, stderr: "" }),
    (error: { code: number; stderr: string }) => error,
  );
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /refusing to listen on 0\.0\.0\.0 without authentication.*--tenants-file.*--oauth-issuer.*--insecure-no-auth/);

  const child = spawn(process.execPath, [cli, "start", "--host", "0.0.0.0", "--port", "0", "--servers", "memory", "--insecure-no-auth"], {
    env: { ...process.env, MCPVISOR_LOG_FORMAT: "json", MCPVISOR_AUDIT_LOG: "off" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  try {
    let stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const deadline = Date.now() + 60_000;
    while (!/INSECURE: listening beyond loopback with no authentication/.test(stderr)) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`no warning in: ${stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(stderr, /"level":40/, "logged as a warning");
  } finally {
    child.kill("SIGKILL");
  }
});
