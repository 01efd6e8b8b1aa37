import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { connect, startReadyGateway } from "./helpers.js";

const text = (result: unknown) => ((result as CallToolResult).content[0] as { text: string }).text;

describe("the other default servers: filesystem and everything", { timeout: 180_000 }, () => {
  let gateway: Awaited<ReturnType<typeof startReadyGateway>>;
  before(async () => {
    gateway = await startReadyGateway({ servers: ["filesystem", "everything"] });
  });
  after(async () => {
    await gateway?.close();
  });

  test("filesystem writes and reads files inside the session's VM only", async () => {
    const a = await connect(gateway.url("filesystem"));
    const b = await connect(gateway.url("filesystem"));
    await a.callTool({ name: "write_file", arguments: { path: "/workspace/note.txt", content: "only in a" } });
    assert.equal(text(await a.callTool({ name: "read_text_file", arguments: { path: "/workspace/note.txt" } })), "only in a");
    const other = (await b.callTool({ name: "read_text_file", arguments: { path: "/workspace/note.txt" } })) as CallToolResult;
    assert.equal(other.isError, true, "another session's VM has no such file");
    await Promise.all([a.close(), b.close()]);
  });

  test("everything echoes, and its prompts and resources are listed", async () => {
    const client = await connect(gateway.url("everything"));
    assert.match(text(await client.callTool({ name: "echo", arguments: { message: "hello" } })), /hello/);
    assert.ok((await client.listPrompts()).prompts.length > 0);
    assert.ok((await client.listResources()).resources.length > 0);
    await client.close();
  });
});
