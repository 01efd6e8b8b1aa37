import type { Server } from "@modelcontextprotocol/sdk/server/index.js";
import {
  ErrorCode,
  GetPromptRequestSchema,
  type GetPromptResult,
  ListPromptsRequestSchema,
  McpError,
  type Prompt,
} from "@modelcontextprotocol/sdk/types.js";
import { RED_PIXEL_PNG_BASE64 } from "./media.js";
import { elicitForm, type RequestExtra } from "./tool-kit.js";

interface ConformancePrompt {
  definition: Prompt;
  render(args: Record<string, string>, extra: RequestExtra): GetPromptResult | Promise<GetPromptResult>;
}

/** Candidate values for completion/complete, by prompt and argument name. */
export const PROMPT_ARGUMENT_VALUES: Record<string, Record<string, string[]>> = {
  test_prompt_with_arguments: {
    arg1: ["paris", "park", "party", "test", "testing"],
    arg2: ["world", "work", "wonder"],
  },
  test_prompt_with_embedded_resource: {
    resourceUri: ["test://static-text", "test://static-binary", "test://watched-resource"],
  },
};

const PROMPTS: ConformancePrompt[] = [
  {
    definition: { name: "test_simple_prompt", title: "Simple prompt", description: "One fixed user message, no arguments." },
    render: () => ({
      messages: [{ role: "user", content: { type: "text", text: "This is a simple prompt for testing." } }],
    }),
  },
  {
    definition: {
      name: "test_prompt_with_arguments",
      title: "Prompt with arguments",
      description: "One user message with both arguments substituted.",
      arguments: [
        { name: "arg1", description: "First test argument", required: true },
        { name: "arg2", description: "Second test argument", required: true },
      ],
    },
    render: ({ arg1, arg2 }) => ({
      messages: [{ role: "user", content: { type: "text", text: `Prompt with arguments: arg1='${arg1}', arg2='${arg2}'` } }],
    }),
  },
  {
    definition: {
      name: "test_prompt_with_embedded_resource",
      title: "Prompt with an embedded resource",
      description: "A user message embedding a text resource under the given URI, then an instruction.",
      arguments: [{ name: "resourceUri", description: "URI of the resource to embed", required: true }],
    },
    render: ({ resourceUri }) => ({
      messages: [
        {
          role: "user",
          content: {
            type: "resource",
            resource: { uri: resourceUri!, mimeType: "text/plain", text: "Embedded resource content for testing." },
          },
        },
        { role: "user", content: { type: "text", text: "Please process the embedded resource above." } },
      ],
    }),
  },
  {
    definition: {
      name: "test_prompt_with_image",
      title: "Prompt with an image",
      description: "A user message holding a 1x1 red PNG, then an instruction.",
    },
    render: () => ({
      messages: [
        { role: "user", content: { type: "image", data: RED_PIXEL_PNG_BASE64, mimeType: "image/png" } },
        { role: "user", content: { type: "text", text: "Please analyze the image above." } },
      ],
    }),
  },
  {
    definition: {
      name: "test_input_required_result_prompt",
      title: "Prompt that asks first",
      description: "Asks the user for context (elicitation), then renders one user message with it.",
    },
    render: async (_args, extra) => {
      const answer = await elicitForm(extra, "What context should the prompt use?", {
        type: "object",
        properties: { context: { type: "string" } },
        required: ["context"],
      }, "user_context");
      return { messages: [{ role: "user", content: { type: "text", text: `Context: ${String(answer.content?.context)}` } }] };
    },
  },
];

export function isKnownPrompt(name: string): boolean {
  return PROMPTS.some((prompt) => prompt.definition.name === name);
}

export function installPrompts(server: Server): void {
  server.setRequestHandler(ListPromptsRequestSchema, () => ({ prompts: PROMPTS.map((prompt) => prompt.definition) }));
  server.setRequestHandler(GetPromptRequestSchema, async (request, extra) => {
    const { name, arguments: args = {} } = request.params;
    const prompt = PROMPTS.find((candidate) => candidate.definition.name === name);
    // The spec's answer to an unknown prompt or a missing required argument is Invalid params.
    if (!prompt) throw new McpError(ErrorCode.InvalidParams, `Unknown prompt: ${name}`);
    const missing = (prompt.definition.arguments ?? []).filter((arg) => arg.required && args[arg.name] === undefined);
    if (missing.length > 0) {
      throw new McpError(ErrorCode.InvalidParams, `Missing required arguments: ${missing.map((arg) => arg.name).join(", ")}`);
    }
    return { description: prompt.definition.description, ...(await prompt.render(args, extra)) };
  });
}
