import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from "@modelcontextprotocol/client";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { tenantsReloads, type TenantsReloadRecord } from "../src/auth/tenants-watcher.js";
import { connectAs, endSession, tenantsFileWith } from "./auth-helpers.js";
import { eventually, nextEvent, startReadyGateway } from "./helpers.js";

const READ_ONLY = ["open_nodes", "read_graph", "search_nodes"];

/** What a call answers, as the client sees it: a result, or the error's code and message. */
async function outcome(client: Client, name: string): Promise<string> {
  const create = { entities: [{ name: "x", entityType: "t", observations: [] }] };
  const args = name === "call_tool" ? { name: "memory__create_entities", arguments: create } : name.endsWith("create_entities") ? create : {};
  try {
    await client.callTool({ name, arguments: args });
    return "ok";
  } catch (error) {
    const { code, message } = error as { code?: number; message: string };
    return `${code}: ${message}`;
  }
}

test("a tenant allowed only memory's read-only tools can neither list nor call the others, by any route or era; another tenant can; the rules reload", { timeout: 240_000 }, async () => {
  const run = randomBytes(3).toString("hex");
  const [reader, writer] = [`reader-${run}`, `writer-${run}`];
  const readOnly = { access: { tools: { allow: ["memory/*"], annotations: { readOnlyHint: true } } } };
  const file = await tenantsFileWith({ tenants: { [reader]: readOnly, [writer]: {} } });
  const auditPath = join(file.dir, "audit.log");
  const gateway = await startReadyGateway({ servers: ["memory"], tenantsFile: file.path, auditLog: auditPath }, { pool: { prestarted: 1, warm: 0 } });
  const url = (path: string) => `http://127.0.0.1:${gateway.port}${path}`;
  const names = async (client: Client) => (await client.listTools()).tools.map((t) => t.name).sort();
  try {
    // 2025 era, one server's endpoint: the list holds only what is allowed, and a denied tool is answered
    // exactly as one that does not exist.
    const direct = await connectAs(url("/servers/memory/mcp"), file.keys[reader]!);
    assert.deepEqual(await names(direct), READ_ONLY);
    const denied = await outcome(direct, "create_entities");
    const missing = await outcome(direct, "no_such_tool");
    assert.match(denied, /^-32602: /);
    assert.equal(denied.replace("create_entities", "X"), missing.replace("no_such_tool", "X"), "denied reads as does-not-exist");
    assert.equal(await outcome(direct, "read_graph"), "ok");

    // The aggregate endpoint.
    const aggregate = await connectAs(url("/mcp"), file.keys[reader]!);
    assert.deepEqual(await names(aggregate), READ_ONLY.map((n) => `memory__${n}`));
    assert.match(await outcome(aggregate, "memory__create_entities"), /^-32602: .*Unknown tool/);

    // The 2026-07-28 era.
    const modern = new ModernClient({ name: "governance", version: "0" }, { versionNegotiation: { mode: "auto" } });
    await modern.connect(new ModernTransport(new URL(url("/servers/memory/mcp")), { requestInit: { headers: { authorization: `Bearer ${file.keys[reader]}` } } }));
    assert.equal(modern.getNegotiatedProtocolVersion(), "2026-07-28");
    assert.deepEqual((await modern.listTools()).tools.map((t) => t.name).sort(), READ_ONLY);
    await assert.rejects(modern.callTool({ name: "create_entities", arguments: { entities: [] } }), /Unknown tool 'create_entities'/);
    await modern.close();

    // Tool search mode finds only what the tenant may see, and call_tool is held to the same rules.
    const search = await connectAs(url("/mcp?tools=search"), file.keys[reader]!);
    const found = (await search.callTool({ name: "search_tools", arguments: { query: "create entities in the graph", limit: 20 } })) as unknown as { structuredContent: { tools: Array<{ name: string }> } };
    assert.ok(found.structuredContent.tools.length > 0);
    assert.ok(!found.structuredContent.tools.some((t) => t.name === "memory__create_entities"), "a denied tool is never found");
    assert.match(await outcome(search, "call_tool"), /^-32602: .*Unknown tool/, "nor called through call_tool");
    await endSession(search);

    // Another tenant sees and calls everything.
    const other = await connectAs(url("/servers/memory/mcp"), file.keys[writer]!);
    assert.equal((await names(other)).length, 9);
    assert.equal(await outcome(other, "create_entities"), "ok");

    // The audit line says what the client was not told.
    await eventually(async () => (await readFile(auditPath, "utf8").catch(() => "")).includes('"denied":true'), "the denied call's audit line", 10_000);
    const lines = (await readFile(auditPath, "utf8")).trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(lines.some((l) => l.event === "tools/call" && l.tenant === reader && l.tool === "create_entities" && l.denied === true && l.outcome === "error"));

    // A rules file that does not parse is refused; the last good one stays.
    const refused = nextEvent<TenantsReloadRecord>(tenantsReloads, "the broken file to be refused", (r) => r.path === file.path && r.outcome === "refused");
    const good = await readFile(file.path, "utf8");
    await writeFile(file.path, good.replace('"readOnlyHint":true', '"readOnlyHint":"yes"'));
    await refused;
    assert.deepEqual(await names(direct), READ_ONLY);

    // Rules changed: open sessions follow them at once (read on every list and call).
    const widened = JSON.parse(good) as { tenants: Record<string, { access?: unknown }> };
    widened.tenants[reader] = { access: { tools: { deny: ["memory/delete_*"] } } };
    await writeFile(file.path, JSON.stringify(widened));
    await eventually(async () => (await names(direct)).includes("create_entities"), "the reloaded rules to apply to the open session", 10_000);
    assert.deepEqual((await names(direct)).filter((n) => n.startsWith("delete_")), []);
    assert.equal(await outcome(direct, "create_entities"), "ok");

    for (const client of [direct, aggregate, other]) await endSession(client);
  } finally {
    await gateway.close();
  }
});

test("prompts and resources follow the tenant's rules: left out of lists, unknown when asked for", { timeout: 180_000 }, async () => {
  const run = randomBytes(3).toString("hex");
  const tenant = `narrow-${run}`;
  const access = { prompts: { deny: ["conformance/*"] }, resources: { allow: ["conformance/test://static-text"] } };
  const file = await tenantsFileWith({ tenants: { [tenant]: { access } } });
  const gateway = await startReadyGateway({ servers: ["conformance"], tenantsFile: file.path, auditLog: "off" }, { pool: { prestarted: 1, warm: 0 } });
  try {
    const client = await connectAs(`http://127.0.0.1:${gateway.port}/servers/conformance/mcp`, file.keys[tenant]!);
    assert.deepEqual((await client.listPrompts()).prompts, []);
    await assert.rejects(client.getPrompt({ name: "test_simple_prompt" }), /Unknown prompt 'test_simple_prompt'/);
    await assert.rejects(client.complete({ ref: { type: "ref/prompt", name: "test_prompt_with_arguments" }, argument: { name: "arg1", value: "pa" } }), /Unknown prompt/);
    assert.deepEqual((await client.listResources()).resources.map((r) => r.uri), ["test://static-text"]);
    assert.deepEqual((await client.listResourceTemplates()).resourceTemplates, []);
    await assert.rejects(client.readResource({ uri: "test://static-binary" }), /Unknown resource 'test:\/\/static-binary'/);
    const text = await client.readResource({ uri: "test://static-text" });
    assert.ok(text.contents.length > 0);
    const aggregate = await connectAs(`http://127.0.0.1:${gateway.port}/mcp`, file.keys[tenant]!);
    assert.deepEqual((await aggregate.listPrompts()).prompts, []);
    await assert.rejects(aggregate.getPrompt({ name: "conformance__test_simple_prompt" }), /Unknown prompt/);
    await assert.rejects(aggregate.readResource({ uri: "test://static-binary" }), /Unknown resource/);
    await Promise.all([endSession(client), endSession(aggregate)]);
  } finally {
    await gateway.close();
  }
});
