import type { CallToolResult, ClientCapabilities, ElicitRequestFormParams } from "@modelcontextprotocol/sdk/types.js";
import { type ConformanceTool, elicitForm, NO_ARGUMENTS, sampleText, stringArgument, textResult, type ToolContext } from "./tool-kit.js";

type RequestedSchema = ElicitRequestFormParams["requestedSchema"];

/**
 * Tools that send a request back to the client (sampling/createMessage, elicitation/create) and wait for
 * its answer before returning. Through a proxy this is the round trip most easily lost: the proxy has to
 * carry a server->client request out and the client's response back in, with the ids untouched.
 */
export const clientRequestTools: ConformanceTool[] = [
  {
    definition: {
      name: "test_sampling",
      description: "Asks the client's LLM (sampling/createMessage, maxTokens 100) to answer the prompt and returns the answer.",
      inputSchema: {
        type: "object",
        properties: { prompt: { type: "string", description: "The prompt to send to the LLM" } },
        required: ["prompt"],
      },
    },
    run: async (args, context) => {
      const prompt = stringArgument(args, "prompt");
      const missing = missingCapability(context, "sampling");
      if (missing) return missing;
      return textResult(`LLM response: ${await sampleText(context.extra, prompt, 100)}`);
    },
  },
  {
    definition: {
      name: "test_elicitation",
      description: "Asks the user (elicitation/create, form mode) for a username and an email and returns the answer.",
      inputSchema: {
        type: "object",
        properties: { message: { type: "string", description: "The message to show the user" } },
        required: ["message"],
      },
    },
    run: async (args, context) => {
      const message = stringArgument(args, "message");
      return elicit(
        context,
        message,
        {
          type: "object",
          properties: {
            username: { type: "string", description: "User's response" },
            email: { type: "string", description: "User's email address" },
          },
          required: ["username", "email"],
        },
        "User response",
      );
    },
  },
  {
    definition: {
      name: "test_elicitation_sep1034_defaults",
      description: "Elicits a form whose string, integer, number, enum and boolean fields all carry defaults (SEP-1034).",
      inputSchema: NO_ARGUMENTS,
    },
    run: async (_args, context) =>
      elicit(context, "Please review your profile (every field has a default)", {
        type: "object",
        properties: {
          name: { type: "string", title: "Name", default: "John Doe" },
          age: { type: "integer", title: "Age", minimum: 0, maximum: 150, default: 30 },
          score: { type: "number", title: "Score", minimum: 0, maximum: 100, default: 95.5 },
          status: { type: "string", title: "Status", enum: ["active", "inactive", "pending"], default: "active" },
          verified: { type: "boolean", title: "Verified", default: true },
        },
      }),
  },
  {
    definition: {
      name: "test_elicitation_sep1330_enums",
      description: "Elicits a form with all five enum shapes of SEP-1330: untitled, titled (oneOf), legacy enumNames, and the two multi-selects.",
      inputSchema: NO_ARGUMENTS,
    },
    run: async (_args, context) =>
      elicit(context, "Please pick some options", {
        type: "object",
        properties: {
          untitledSingle: { type: "string", title: "Untitled single-select", enum: ["option1", "option2", "option3"] },
          titledSingle: {
            type: "string",
            title: "Titled single-select",
            oneOf: [
              { const: "value1", title: "First Option" },
              { const: "value2", title: "Second Option" },
              { const: "value3", title: "Third Option" },
            ],
          },
          legacyEnum: {
            type: "string",
            title: "Legacy titled single-select",
            enum: ["opt1", "opt2", "opt3"],
            enumNames: ["Option One", "Option Two", "Option Three"],
          },
          untitledMulti: {
            type: "array",
            title: "Untitled multi-select",
            items: { type: "string", enum: ["option1", "option2", "option3"] },
          },
          titledMulti: {
            type: "array",
            title: "Titled multi-select",
            items: {
              anyOf: [
                { const: "value1", title: "First Choice" },
                { const: "value2", title: "Second Choice" },
                { const: "value3", title: "Third Choice" },
              ],
            },
          },
        },
      }),
  },
];

/** The spec forbids sending a request the client did not declare; a tool error says why instead. */
function missingCapability(context: ToolContext, capability: keyof ClientCapabilities): CallToolResult | undefined {
  if (context.server.getClientCapabilities()?.[capability] !== undefined) return undefined;
  return textResult(`The client did not declare the '${capability}' capability, so this tool cannot run.`, true);
}

/** A form-mode elicitation/create, answered as "<label>: action=..., content={...}". */
async function elicit(
  context: ToolContext,
  message: string,
  requestedSchema: RequestedSchema,
  label = "Elicitation completed",
): Promise<CallToolResult> {
  const missing = missingCapability(context, "elicitation");
  if (missing) return missing;
  const result = await elicitForm(context.extra, message, requestedSchema);
  return textResult(`${label}: action=${result.action}, content=${JSON.stringify(result.content ?? {})}`);
}
