import type { ClientCapabilities } from "@modelcontextprotocol/sdk/types.js";
import { type ConformanceTool, elicitForm, listRoots, log, NO_ARGUMENTS, sampleText, textResult, type RequestExtra } from "./tool-kit.js";

const CONFIRM = { type: "object" as const, properties: { ok: { type: "boolean" as const } }, required: ["ok"] };
const NAME = { type: "object" as const, properties: { name: { type: "string" as const } }, required: ["name"] };

/** A 2026-07-28 request's declared capabilities, which a gateway in front passes on in `_meta`. */
function requestCapabilities(extra: RequestExtra): ClientCapabilities {
  const declared = extra._meta?.["io.modelcontextprotocol/clientCapabilities"];
  return typeof declared === "object" && declared !== null ? (declared as ClientCapabilities) : {};
}

/**
 * The tools conformance 0.2's 2026-07-28 scenarios call (input-required-result-*, server-stateless). This
 * server is a 2025-era one: it asks its client with ordinary server->client requests (elicitation,
 * sampling, roots/list), and a gateway serving a 2026 client turns each into an input_required round
 * (MRTR) with a requestState of its own. A tool here that gets its answers did so because that state was
 * verified, which is what "state-ok" reports.
 */
export const inputRequiredTools: ConformanceTool[] = [
  {
    definition: { name: "test_input_required_result_elicitation", description: "Asks the user's name (elicitation) and greets them.", inputSchema: NO_ARGUMENTS },
    run: async (_args, { extra }) => {
      const answer = await elicitForm(extra, "What is your name?", NAME, "user_name");
      return textResult(`Hello, ${String(answer.content?.name ?? "(no name)")} (action=${answer.action})`);
    },
  },
  {
    definition: { name: "test_input_required_result_sampling", description: "Asks the client's LLM the capital of France.", inputSchema: NO_ARGUMENTS },
    run: async (_args, { extra }) => textResult(`LLM says: ${await sampleText(extra, "What is the capital of France?", 100, "capital_question")}`),
  },
  {
    definition: { name: "test_input_required_result_list_roots", description: "Lists the client's roots.", inputSchema: NO_ARGUMENTS },
    run: async (_args, { extra }) => textResult(`Roots: ${(await listRoots(extra, "client_roots")).roots.map((root) => root.uri).join(", ")}`),
  },
  {
    definition: { name: "test_input_required_result_request_state", description: "Asks for a confirmation; reports state-ok once it arrives.", inputSchema: NO_ARGUMENTS },
    run: async (_args, { extra }) => {
      const answer = await elicitForm(extra, "Please confirm", CONFIRM, "confirm");
      return textResult(`state-ok: confirmed=${String(answer.content?.ok)}`);
    },
  },
  {
    definition: { name: "test_input_required_result_tampered_state", description: "Asks for a confirmation (the state a gateway mints for it must not be forgeable).", inputSchema: NO_ARGUMENTS },
    run: async (_args, { extra }) => textResult(`confirmed=${String((await elicitForm(extra, "Please confirm", CONFIRM, "confirm")).content?.ok)}`),
  },
  {
    definition: { name: "test_input_required_result_multiple_inputs", description: "Asks for a name, a greeting and the roots at once.", inputSchema: NO_ARGUMENTS },
    run: async (_args, { extra }) => {
      const [name, greeting, roots] = await Promise.all([
        elicitForm(extra, "What is your name?", NAME, "user_name"),
        sampleText(extra, "Generate a greeting", 50, "greeting"),
        listRoots(extra, "client_roots"),
      ]);
      return textResult(`name=${String(name.content?.name)}, greeting=${greeting}, roots=${roots.roots.length}`);
    },
  },
  {
    definition: { name: "test_input_required_result_multi_round", description: "Asks a name, then a colour: two rounds.", inputSchema: NO_ARGUMENTS },
    run: async (_args, { extra }) => {
      const name = await elicitForm(extra, "Step 1: What is your name?", NAME, "step1");
      const colour = await elicitForm(extra, "Step 2: What is your favorite color?", { type: "object", properties: { color: { type: "string" } }, required: ["color"] }, "step2");
      return textResult(`${String(name.content?.name)} likes ${String(colour.content?.color)}`);
    },
  },
  {
    definition: { name: "test_input_required_result_capabilities", description: "Asks only what the request's declared capabilities allow (sampling, elicitation).", inputSchema: NO_ARGUMENTS },
    run: async (_args, { extra }) => {
      const declared = requestCapabilities(extra);
      const answers = await Promise.all([
        declared.sampling ? sampleText(extra, "Say hello", 20) : undefined,
        declared.elicitation ? elicitForm(extra, "Your name?", NAME).then((r) => String(r.content?.name)) : undefined,
      ]);
      return textResult(`answers: ${answers.filter((a) => a !== undefined).join(", ") || "none (nothing declared)"}`);
    },
  },
  {
    definition: { name: "test_missing_capability", description: "Needs the client's sampling capability (a request without it must be refused).", inputSchema: NO_ARGUMENTS },
    run: async (_args, { extra }) => textResult(`LLM says: ${await sampleText(extra, "Hello?", 10)}`),
  },
  {
    definition: { name: "test_streaming_elicitation", description: "Reports progress, then asks the user's name.", inputSchema: NO_ARGUMENTS },
    run: async (_args, { extra }) => {
      const token = extra._meta?.progressToken;
      if (token !== undefined) await extra.sendNotification({ method: "notifications/progress", params: { progressToken: token, progress: 1, total: 2 } });
      return textResult(`Hello, ${String((await elicitForm(extra, "What is your name?", NAME)).content?.name)}`);
    },
  },
  {
    definition: { name: "test_trigger_tool_change", description: "Says its tool list changed (notifications/tools/list_changed).", inputSchema: NO_ARGUMENTS },
    run: async (_args, { server }) => {
      await server.sendToolListChanged();
      return textResult("tools/list_changed sent");
    },
  },
  {
    definition: { name: "test_trigger_prompt_change", description: "Says its prompt list changed (notifications/prompts/list_changed).", inputSchema: NO_ARGUMENTS },
    run: async (_args, { server }) => {
      await server.sendPromptListChanged();
      return textResult("prompts/list_changed sent");
    },
  },
  {
    definition: { name: "test_logging_tool", description: "Logs one info line while it runs.", inputSchema: NO_ARGUMENTS },
    run: async (_args, context) => {
      await log(context, "info", "test_logging_tool", "a log line");
      return textResult("logged");
    },
  },
];
