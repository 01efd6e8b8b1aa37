import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from "@modelcontextprotocol/client";
import { connect, startReadyGateway } from "./helpers.js";

/** Natural queries over the default servers, each with the tool that must be among the first three. */
const QUERIES: Array<[string, string]> = [
  ["read a file", "filesystem__read_file"],
  ["write text to a file", "filesystem__write_file"],
  ["list the files in a directory", "filesystem__list_directory"],
  ["current time in a timezone", "time__get_current_time"],
  ["convert time between timezones", "time__convert_time"],
  ["fetch a web page", "fetch__fetch"],
  ["commit changes to git", "git__git_commit"],
  ["show the commit log", "git__git_log"],
  ["run a shell command", "exec__run"],
  ["search the knowledge graph", "memory__search_nodes"],
  ["add observations to an entity", "memory__add_observations"],
  ["delete an entity from memory", "memory__delete_entities"],
];

let gateway: Awaited<ReturnType<typeof startReadyGateway>>;
before(async () => {
  // Every default server; no VM until a call needs one (search reads the templates' lists).
  gateway = await startReadyGateway({}, { pool: { prestarted: 0, warm: 0 } });
});
after(() => gateway.close());

/** Either SDK's client: both call tools alike. */
type ToolCaller = { callTool(params: { name: string; arguments: Record<string, unknown> }): Promise<unknown> };

const searchWith = async (client: ToolCaller, query: string): Promise<string[]> => {
  const result = (await client.callTool({ name: "search_tools", arguments: { query, limit: 3 } })) as { structuredContent: { tools: Array<{ name: string; inputSchema: unknown }> } };
  for (const tool of result.structuredContent.tools) assert.ok(tool.inputSchema, `${tool.name} comes with its inputSchema`);
  return result.structuredContent.tools.map((t) => t.name);
};

test("tool search mode: two tools listed; natural queries find the right tool in the first three; call_tool calls it", { timeout: 180_000 }, async () => {
  const client = await connect(`http://127.0.0.1:${gateway.port}/mcp?tools=search`);
  assert.deepEqual((await client.listTools()).tools.map((t) => t.name), ["search_tools", "call_tool"]);
  const misses: string[] = [];
  for (const [query, expected] of QUERIES) {
    const found = await searchWith(client, query);
    if (!found.includes(expected)) misses.push(`'${query}': ${found.join(", ")} (expected ${expected})`);
  }
  assert.deepEqual(misses, []);
  const now = (await client.callTool({ name: "call_tool", arguments: { name: "time__get_current_time", arguments: { timezone: "UTC" } } })) as { content: Array<{ text?: string }>; isError?: boolean };
  assert.notEqual(now.isError, true);
  assert.match(now.content[0]?.text ?? "", /UTC/);
  await assert.rejects(client.callTool({ name: "call_tool", arguments: { name: "time__no_such_tool", arguments: {} } }), /Unknown tool/);
  await assert.rejects(client.callTool({ name: "time__get_current_time", arguments: { timezone: "UTC" } }), /search_tools and call_tool/, "only the two tools exist in this mode");
  await client.close();
});

test("tool search mode for 2026-07-28 requests, on the same URL", { timeout: 120_000 }, async () => {
  const modern = new ModernClient({ name: "search", version: "0" }, { versionNegotiation: { mode: "auto" } });
  await modern.connect(new ModernTransport(new URL(`http://127.0.0.1:${gateway.port}/mcp?tools=search`)));
  assert.equal(modern.getNegotiatedProtocolVersion(), "2026-07-28");
  assert.deepEqual((await modern.listTools()).tools.map((t) => t.name), ["search_tools", "call_tool"]);
  assert.ok((await searchWith(modern, "current time in a timezone")).includes("time__get_current_time"));
  await modern.close();
  // The same gateway without the query lists every tool.
  const plain = await connect(`http://127.0.0.1:${gateway.port}/mcp`);
  assert.ok((await plain.listTools()).tools.length > 20);
  await plain.close();
});
