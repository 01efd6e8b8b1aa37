import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { McpError, type CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import type { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { connect, eventually, startReadyGateway } from "./helpers.js";

type ReadyGateway = Awaited<ReturnType<typeof startReadyGateway>>;

describe("the aggregated /mcp endpoint", { timeout: 180_000 }, () => {
  let gateway: ReadyGateway;
  let client: Client;
  const leased = () => gateway.pool.stats().reduce((n, s) => n + s.leased, 0);

  before(async () => {
    gateway = await startReadyGateway({ servers: ["memory", "exec"] });
    client = await connect(`http://127.0.0.1:${gateway.port}/mcp`);
  });
  after(async () => {
    await client?.close();
    await gateway?.close();
  });

  test("lists every server's tools namespaced, without resuming a VM", async () => {
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    assert.ok(names.includes("memory__read_graph"));
    assert.ok(names.includes("exec__run"));
    assert.ok(names.every((n) => /^(memory|exec)__/.test(n)));
    assert.equal(leased(), 0, "listing is answered from the templates' catalogs");
  });

  test("tool names do not change when servers are added: a gateway with one server names them the same", async () => {
    const single = await startReadyGateway({ servers: ["memory"] });
    try {
      const other = await connect(`http://127.0.0.1:${single.port}/mcp`);
      const alone = (await other.listTools()).tools.map((t) => t.name).sort();
      const together = (await client.listTools()).tools.map((t) => t.name).filter((n) => n.startsWith("memory__")).sort();
      assert.deepEqual(alone, together);
      await other.close();
    } finally {
      await single.close();
    }
  });

  test("unknown tools, unknown servers and schema-invalid arguments get clear errors without a VM", async () => {
    const before = leased();
    for (const [name, args, pattern] of [
      ["nope__run", {}, /Unknown tool 'nope__run': names here are <server>__<name>, servers: /],
      ["exec__nope", {}, /Unknown tool 'exec__nope'/],
      ["read_graph", {}, /names here are <server>__<name>/],
      ["exec__run", { command: 42 }, /Invalid arguments for tool 'exec__run'/],
    ] as const) {
      await assert.rejects(client.callTool({ name, arguments: args }), (err: unknown) => {
        assert.ok(err instanceof McpError);
        assert.equal(err.code, -32602);
        assert.match(err.message, pattern);
        return true;
      });
    }
    assert.equal(leased(), before);
  });

  test("calls are routed to each server's own clone, resumed on first use", async () => {
    const run = (await client.callTool({ name: "exec__run", arguments: { command: "echo routed" } })) as CallToolResult;
    assert.equal((run.structuredContent as { stdout: string }).stdout, "routed\n");
    assert.equal(leased(), 1, "only the server that was called has a clone");
    await client.callTool({ name: "memory__create_entities", arguments: { entities: [{ name: "a", entityType: "t", observations: ["x"] }] } });
    const graph = (await client.callTool({ name: "memory__read_graph", arguments: {} })) as CallToolResult;
    assert.deepEqual((graph.structuredContent as { entities: { name: string }[] }).entities.map((e) => e.name), ["a"]);
    assert.equal(leased(), 2);
  });

  test("closing the session destroys every clone it used", async () => {
    await (client.transport as StreamableHTTPClientTransport).terminateSession();
    await client.close();
    await eventually(() => leased() === 0, "every clone of the session is destroyed");
  });
});
