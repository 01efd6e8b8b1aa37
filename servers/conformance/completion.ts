import type { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { CompleteRequestSchema, ErrorCode, McpError } from "@modelcontextprotocol/sdk/types.js";
import { isKnownPrompt, PROMPT_ARGUMENT_VALUES } from "./prompts.js";

/** Candidate values for the resource template's variables. */
const TEMPLATE_VARIABLE_VALUES: Record<string, Record<string, string[]>> = {
  "test://template/{id}/data": { id: ["1", "123", "42", "abc"] },
};

/** The spec caps one completion answer at 100 values. */
const MAX_VALUES = 100;

/** completion/complete for prompt arguments and template variables: known candidates starting with the
 * typed prefix (case-insensitive). A known prompt or template with no candidates answers an empty list. */
export function installCompletion(server: Server): void {
  server.setRequestHandler(CompleteRequestSchema, (request) => {
    const { ref, argument } = request.params;
    let candidates: string[];
    if (ref.type === "ref/prompt") {
      if (!isKnownPrompt(ref.name)) throw new McpError(ErrorCode.InvalidParams, `Unknown prompt: ${ref.name}`);
      candidates = PROMPT_ARGUMENT_VALUES[ref.name]?.[argument.name] ?? [];
    } else {
      const variables = TEMPLATE_VARIABLE_VALUES[ref.uri];
      if (!variables) throw new McpError(ErrorCode.InvalidParams, `Unknown resource template: ${ref.uri}`);
      candidates = variables[argument.name] ?? [];
    }
    const prefix = argument.value.toLowerCase();
    const matches = candidates.filter((value) => value.toLowerCase().startsWith(prefix));
    return {
      completion: { values: matches.slice(0, MAX_VALUES), total: matches.length, hasMore: matches.length > MAX_VALUES },
    };
  });
}
