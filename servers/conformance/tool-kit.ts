import type { Server } from "@modelcontextprotocol/sdk/server/index.js";
import type { RequestHandlerExtra } from "@modelcontextprotocol/sdk/shared/protocol.js";
import type {
  CallToolResult,
  LoggingLevel,
  ServerNotification,
  ServerRequest,
  Tool,
} from "@modelcontextprotocol/sdk/types.js";
import type { LogLevelGate } from "./log-level.js";
import type { ResourceCatalog } from "./resources.js";

export type RequestExtra = RequestHandlerExtra<ServerRequest, ServerNotification>;

/** What a tool may use besides its arguments. */
export interface ToolContext {
  server: Server;
  /** The tools/call request's own channel: notifications and requests sent with it carry the request's
   * id as relatedRequestId, which HTTP transports need to put them on the right stream. */
  extra: RequestExtra;
  logLevel: LogLevelGate;
  resources: ResourceCatalog;
}

/** A tool as the wire sees it (a literal JSON Schema, not a zod shape: some scenarios check keywords such as
 * `$schema` and `$defs` that a conversion would drop) plus its behaviour. */
export interface ConformanceTool {
  definition: Tool;
  run(args: Record<string, unknown>, context: ToolContext): Promise<CallToolResult>;
}

/** Bad arguments are a tool execution error (isError), not a protocol error, so the model can see them. */
export class ToolInputError extends Error {}

export const NO_ARGUMENTS: Tool["inputSchema"] = { type: "object", properties: {} };

export function textResult(text: string, isError = false): CallToolResult {
  return isError ? { content: [{ type: "text", text }], isError: true } : { content: [{ type: "text", text }] };
}

export function stringArgument(args: Record<string, unknown>, name: string): string {
  const value = args[name];
  if (typeof value !== "string") throw new ToolInputError(`Argument '${name}' must be a string.`);
  return value;
}

/** A notifications/message, sent only if the client's logging/setLevel lets it through. */
export async function log(context: ToolContext, level: LoggingLevel, logger: string, data: unknown): Promise<void> {
  if (!context.logLevel.allows(level)) return;
  await context.extra.sendNotification({ method: "notifications/message", params: { level, logger, data } });
}
