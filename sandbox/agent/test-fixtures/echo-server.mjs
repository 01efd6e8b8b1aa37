// A real stdio MCP server for the agent tests: `echo`, plus tools that misbehave on purpose.
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { z } from "zod";

const server = new McpServer({ name: "echo-fixture", version: "1.0.0" });
server.tool("echo", { text: z.string() }, async ({ text }) => ({ content: [{ type: "text", text }] }));
server.tool("garbage", {}, async () => {
  process.stdout.write("this is not json\n");
  return { content: [{ type: "text", text: "wrote garbage" }] };
});
server.tool("crash", {}, async () => {
  process.stderr.write("fixture: about to crash\n");
  setTimeout(() => process.exit(3), 20);
  return { content: [{ type: "text", text: "bye" }] };
});
process.stderr.write("fixture: started\n");
await server.connect(new StdioServerTransport());
