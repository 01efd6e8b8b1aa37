import type { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { CallToolRequestSchema, ErrorCode, ListToolsRequestSchema, McpError } from "@modelcontextprotocol/sdk/types.js";
import { clientRequestTools } from "./client-request-tools.js";
import { contentTools } from "./content-tools.js";
import { inputRequiredTools } from "./input-required-tools.js";
import type { LogLevelGate } from "./log-level.js";
import { notifyingTools } from "./notifying-tools.js";
import type { ResourceCatalog } from "./resources.js";
import { taskTools } from "./task-tools.js";
import { type ConformanceTool, ProtocolFault, textResult, ToolInputError } from "./tool-kit.js";

export const TOOLS: readonly ConformanceTool[] = [...contentTools, ...notifyingTools, ...clientRequestTools, ...inputRequiredTools, ...taskTools];

export function installTools(server: Server, state: { logLevel: LogLevelGate; resources: ResourceCatalog }): void {
  const byName = new Map(TOOLS.map((tool) => [tool.definition.name, tool]));

  server.setRequestHandler(ListToolsRequestSchema, () => ({ tools: TOOLS.map((tool) => tool.definition) }));

  server.setRequestHandler(CallToolRequestSchema, async (request, extra) => {
    const tool = byName.get(request.params.name);
    // An unknown tool is a protocol error (the spec's example uses Invalid params); a failing tool is not.
    if (!tool) throw new McpError(ErrorCode.InvalidParams, `Unknown tool: ${request.params.name}`);
    try {
      return await tool.run(request.params.arguments ?? {}, { server, extra, ...state });
    } catch (error) {
      if (error instanceof ProtocolFault) throw new McpError(ErrorCode.InternalError, error.message);
      // Bad arguments and a refused or failed client request (sampling, elicitation) are tool errors the
      // caller should see as a result, so the call is answered with isError rather than a JSON-RPC error.
      const reason = error instanceof Error ? error.message : String(error);
      return textResult(error instanceof ToolInputError ? reason : `${tool.definition.name} failed: ${reason}`, true);
    }
  });
}
