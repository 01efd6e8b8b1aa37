import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { installCompletion } from "./completion.js";
import { LogLevelGate } from "./log-level.js";
import { installPrompts } from "./prompts.js";
import { ResourceCatalog } from "./resources.js";
import { installTools } from "./tools.js";

export const CONFORMANCE_SERVER_VERSION = "0.1.0";

/**
 * The low-level Server rather than McpServer: every list entry here is exactly what goes on the wire
 * (literal JSON Schemas, fixed texts), and subscribe/unsubscribe need handlers McpServer does not offer.
 */
export function createConformanceServer(): Server {
  const server = new Server(
    { name: "mcpvisor-conformance", title: "MCP conformance fixture", version: CONFORMANCE_SERVER_VERSION },
    {
      capabilities: {
        tools: { listChanged: true },
        resources: { subscribe: true },
        prompts: { listChanged: true },
        logging: {},
        completions: {},
      },
      instructions:
        "Test fixture for the MCP conformance suite: every tool, resource and prompt returns fixed test data.",
    },
  );
  const logLevel = new LogLevelGate();
  const resources = new ResourceCatalog();
  logLevel.install(server);
  resources.install(server);
  installTools(server, { logLevel, resources });
  installPrompts(server);
  installCompletion(server);
  return server;
}
