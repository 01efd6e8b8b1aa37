import type { Server } from "@modelcontextprotocol/sdk/server/index.js";
import type { RequestHandlerExtra } from "@modelcontextprotocol/sdk/shared/protocol.js";
import {
  CreateMessageResultSchema,
  ElicitResultSchema,
  ListRootsResultSchema,
  type CallToolResult,
  type ElicitRequestFormParams,
  type LoggingLevel,
  type ServerNotification,
  type ServerRequest,
  type Tool,
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

/** A failure the call answers with a JSON-RPC error rather than a tool error (a "crash"). */
export class ProtocolFault extends Error {}

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

/**
 * `_meta` naming the key a gateway that turns this request into an input_required round (MRTR) should
 * file it under, as the 2026-07-28 scenarios expect fixed keys; other clients ignore it.
 */
function keyed(key: string | undefined): { _meta?: Record<string, string> } {
  return key ? { _meta: { "io.mcpvisor/inputKey": key } } : {};
}

/** A form-mode elicitation/create on the request's own channel. `mode` is left out: "form" is its default
 * and clients older than 2025-11-25 do not know the field. */
export function elicitForm(extra: RequestExtra, message: string, requestedSchema: ElicitRequestFormParams["requestedSchema"], key?: string) {
  return extra.sendRequest({ method: "elicitation/create", params: { message, requestedSchema, ...keyed(key) } }, ElicitResultSchema);
}

/** A sampling/createMessage of one user text, answered as text (or a note of the content type). */
export async function sampleText(extra: RequestExtra, text: string, maxTokens: number, key?: string): Promise<string> {
  const result = await extra.sendRequest(
    { method: "sampling/createMessage", params: { messages: [{ role: "user", content: { type: "text", text } }], maxTokens, ...keyed(key) } },
    CreateMessageResultSchema,
  );
  return result.content.type === "text" ? result.content.text : `[${result.content.type} content]`;
}

export function listRoots(extra: RequestExtra, key?: string) {
  return extra.sendRequest({ method: "roots/list", params: { ...keyed(key) } }, ListRootsResultSchema);
}
