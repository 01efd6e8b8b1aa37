import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import {
  type CallToolResult,
  CreateMessageRequestSchema,
  type ElicitRequest,
  ElicitRequestSchema,
  type LoggingMessageNotification,
  LoggingMessageNotificationSchema,
  McpError,
  type Progress,
  ResourceUpdatedNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";

const serverPath = fileURLToPath(new URL("./server.ts", import.meta.url));

const EXPECTED_TOOLS = [
  "confirm_delete",
  "failing_job",
  "greet",
  "json_schema_2020_12_tool",
  "multi_input",
  "protocol_error_job",
  "slow_compute",
  "test_audio_content",
  "test_elicitation",
  "test_elicitation_sep1034_defaults",
  "test_elicitation_sep1330_enums",
  "test_embedded_resource",
  "test_error_handling",
  "test_header_param",
  "test_image_content",
  "test_input_required_result_capabilities",
  "test_input_required_result_elicitation",
  "test_input_required_result_list_roots",
  "test_input_required_result_multi_round",
  "test_input_required_result_multiple_inputs",
  "test_input_required_result_request_state",
  "test_input_required_result_sampling",
  "test_input_required_result_tampered_state",
  "test_logging_tool",
  "test_missing_capability",
  "test_multiple_content_types",
  "test_reconnection",
  "test_sampling",
  "test_simple_text",
  "test_streaming_elicitation",
  "test_tool_with_logging",
  "test_tool_with_progress",
  "test_tool_with_task",
  "test_trigger_prompt_change",
  "test_trigger_tool_change",
  "test_update_resource",
];

function connect(client: Client): Promise<void> {
  return client.connect(new StdioClientTransport({ command: process.execPath, args: ["--import", "tsx", serverPath] }));
}

function textOf(result: CallToolResult): string {
  return result.content.map((block) => (block.type === "text" ? block.text : "")).join("");
}

async function call(name: string, args: Record<string, unknown> = {}): Promise<CallToolResult> {
  return (await client.callTool({ name, arguments: args })) as CallToolResult;
}

// One client that, like the conformance suite's, declares sampling and elicitation and answers both.
let client: Client;
const samplingPrompts: string[] = [];
const elicitations: ElicitRequest["params"][] = [];
const logMessages: LoggingMessageNotification["params"][] = [];
const updatedUris: string[] = [];

before(async () => {
  client = new Client({ name: "conformance-fixture-test", version: "0.0.0" }, { capabilities: { sampling: {}, elicitation: {} } });
  client.setRequestHandler(CreateMessageRequestSchema, (request) => {
    const content = request.params.messages[0]?.content;
    samplingPrompts.push(content && !Array.isArray(content) && content.type === "text" ? content.text : "");
    assert.equal(request.params.maxTokens, 100);
    return { role: "assistant", content: { type: "text", text: "sampled answer" }, model: "test-model", stopReason: "endTurn" };
  });
  client.setRequestHandler(ElicitRequestSchema, (request) => {
    elicitations.push(request.params);
    return { action: "accept", content: { username: "ada", email: "ada@example.com" } };
  });
  client.setNotificationHandler(LoggingMessageNotificationSchema, (notification) => {
    logMessages.push(notification.params);
  });
  client.setNotificationHandler(ResourceUpdatedNotificationSchema, (notification) => {
    updatedUris.push(notification.params.uri);
  });
  await connect(client);
});

after(async () => {
  await client.close();
});

describe("conformance fixture", () => {
  test("initialize declares the capabilities the suite's client checks before sending", () => {
    assert.equal(client.getServerVersion()?.name, "mcpvisor-conformance");
    const capabilities = client.getServerCapabilities();
    assert.deepEqual(capabilities?.resources, { subscribe: true });
    assert.ok(capabilities?.tools && capabilities.prompts && capabilities.logging && capabilities.completions);
  });

  test("tools/list has every expected tool, and the 2020-12 schema keywords survive", async () => {
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((tool) => tool.name).sort(), EXPECTED_TOOLS);
    for (const tool of tools) assert.ok(tool.description, `${tool.name} has a description`);
    const schema = tools.find((tool) => tool.name === "json_schema_2020_12_tool")?.inputSchema as Record<string, unknown>;
    assert.equal(schema.$schema, "https://json-schema.org/draft/2020-12/schema");
    assert.ok((schema.$defs as Record<string, unknown>).address);
    assert.equal(schema.additionalProperties, false);
  });

  test("content tools return text, PNG, WAV, embedded and mixed content; the error tool sets isError", async () => {
    assert.equal(textOf(await call("test_simple_text")), "This is a simple text response for testing.");
    const [image] = (await call("test_image_content")).content;
    assert.ok(image?.type === "image" && image.mimeType === "image/png");
    assert.equal(Buffer.from(image.data, "base64").subarray(1, 4).toString(), "PNG");
    const [audio] = (await call("test_audio_content")).content;
    assert.ok(audio?.type === "audio" && audio.mimeType === "audio/wav");
    const wav = Buffer.from(audio.data, "base64");
    assert.equal(`${wav.subarray(0, 4)}${wav.subarray(8, 12)}`, "RIFFWAVE");
    const [embedded] = (await call("test_embedded_resource")).content;
    assert.ok(embedded?.type === "resource" && embedded.resource.uri === "test://embedded-resource");
    const mixed = await call("test_multiple_content_types");
    assert.deepEqual(mixed.content.map((block) => block.type), ["text", "image", "resource"]);
    const failed = await call("test_error_handling");
    assert.equal(failed.isError, true);
    assert.match(textOf(failed), /intentionally returns an error/);
  });

  test("an unknown tool is a JSON-RPC Invalid params error", async () => {
    await assert.rejects(call("no_such_tool"), (error: unknown) => error instanceof McpError && error.code === -32602);
  });

  test("test_tool_with_progress sends 0, 50, 100 of 100 to the caller's onprogress", async () => {
    const progress: Progress[] = [];
    const result = await client.callTool({ name: "test_tool_with_progress", arguments: {} }, undefined, {
      onprogress: (update) => progress.push(update),
    });
    assert.equal(result.isError, undefined);
    assert.deepEqual(
      progress.map(({ progress: value, total }) => [value, total]),
      [
        [0, 100],
        [50, 100],
        [100, 100],
      ],
    );
  });

  test("test_tool_with_logging sends three info messages, and logging/setLevel filters them", async () => {
    logMessages.length = 0;
    assert.deepEqual(await client.setLoggingLevel("info"), {});
    await call("test_tool_with_logging");
    assert.deepEqual(
      logMessages.map((message) => [message.level, message.data]),
      [
        ["info", "Tool execution started"],
        ["info", "Tool processing data"],
        ["info", "Tool execution completed"],
      ],
    );
    logMessages.length = 0;
    await client.setLoggingLevel("warning");
    await call("test_tool_with_logging");
    assert.deepEqual(logMessages, []);
    await client.setLoggingLevel("debug");
  });

  test("test_sampling is answered by the client's sampling handler", async () => {
    const result = await call("test_sampling", { prompt: "What is 2+2?" });
    assert.equal(textOf(result), "LLM response: sampled answer");
    assert.deepEqual(samplingPrompts, ["What is 2+2?"]);
  });

  test("test_sampling without its required argument is a tool error, not a protocol error", async () => {
    const result = await call("test_sampling");
    assert.equal(result.isError, true);
    assert.match(textOf(result), /prompt/);
  });

  test("test_elicitation is answered by the client's elicitation handler", async () => {
    elicitations.length = 0;
    const result = await call("test_elicitation", { message: "Who are you?" });
    assert.equal(textOf(result), 'User response: action=accept, content={"username":"ada","email":"ada@example.com"}');
    assert.equal(elicitations[0]?.message, "Who are you?");
  });

  test("the SEP-1034 and SEP-1330 elicitations carry defaults and all five enum shapes", async () => {
    elicitations.length = 0;
    await call("test_elicitation_sep1034_defaults");
    await call("test_elicitation_sep1330_enums");
    const [defaults, enums] = elicitations.map((params) => ("requestedSchema" in params ? params.requestedSchema.properties : {}));
    assert.deepEqual(
      Object.entries(defaults ?? {}).map(([name, schema]) => [name, schema.default]),
      [
        ["name", "John Doe"],
        ["age", 30],
        ["score", 95.5],
        ["status", "active"],
        ["verified", true],
      ],
    );
    assert.deepEqual(Object.keys(enums ?? {}), ["untitledSingle", "titledSingle", "legacyEnum", "untitledMulti", "titledMulti"]);
  });

  test("resources: list, read text, binary and template, and a not-found error", async () => {
    const { resources } = await client.listResources();
    assert.deepEqual(resources.map((resource) => resource.uri), [
      "test://static-text",
      "test://static-binary",
      "test://watched-resource",
    ]);
    const { resourceTemplates } = await client.listResourceTemplates();
    assert.deepEqual(resourceTemplates.map((template) => template.uriTemplate), ["test://template/{id}/data"]);
    const [text] = (await client.readResource({ uri: "test://static-text" })).contents;
    assert.ok(text && "text" in text && text.text === "This is the content of the static text resource.");
    const [binary] = (await client.readResource({ uri: "test://static-binary" })).contents;
    assert.ok(binary && "blob" in binary && binary.mimeType === "image/png");
    const [templated] = (await client.readResource({ uri: "test://template/123/data" })).contents;
    assert.ok(templated && "text" in templated);
    assert.deepEqual(JSON.parse(templated.text), { id: "123", templateTest: true, data: "Data for ID: 123" });
    await assert.rejects(client.readResource({ uri: "test://missing" }), (error: unknown) => error instanceof McpError && error.code === -32002);
  });

  test("a subscribed resource gets resources/updated; after unsubscribe it does not", async () => {
    updatedUris.length = 0;
    assert.deepEqual(await client.subscribeResource({ uri: "test://watched-resource" }), {});
    assert.match(textOf(await call("test_update_resource")), /revision 2; notifications\/resources\/updated was sent/);
    assert.deepEqual(updatedUris, ["test://watched-resource"]);
    const [watched] = (await client.readResource({ uri: "test://watched-resource" })).contents;
    assert.ok(watched && "text" in watched && watched.text.includes("revision 2"));
    assert.deepEqual(await client.unsubscribeResource({ uri: "test://watched-resource" }), {});
    await call("test_update_resource");
    await sleep(20);
    assert.deepEqual(updatedUris, ["test://watched-resource"]);
  });

  test("prompts: list, arguments substituted, embedded resource, image, and a missing argument", async () => {
    const { prompts } = await client.listPrompts();
    assert.deepEqual(prompts.map((prompt) => prompt.name), [
      "test_simple_prompt",
      "test_prompt_with_arguments",
      "test_prompt_with_embedded_resource",
      "test_prompt_with_image",
      "test_input_required_result_prompt",
    ]);
    const simple = await client.getPrompt({ name: "test_simple_prompt" });
    assert.deepEqual(simple.messages[0]?.content, { type: "text", text: "This is a simple prompt for testing." });
    const withArgs = await client.getPrompt({ name: "test_prompt_with_arguments", arguments: { arg1: "hello", arg2: "world" } });
    assert.deepEqual(withArgs.messages[0]?.content, { type: "text", text: "Prompt with arguments: arg1='hello', arg2='world'" });
    const embedded = await client.getPrompt({ name: "test_prompt_with_embedded_resource", arguments: { resourceUri: "test://x" } });
    const resource = embedded.messages[0]?.content;
    assert.ok(resource?.type === "resource" && resource.resource.uri === "test://x");
    const image = await client.getPrompt({ name: "test_prompt_with_image" });
    assert.equal(image.messages[0]?.content.type, "image");
    await assert.rejects(
      client.getPrompt({ name: "test_prompt_with_arguments", arguments: { arg1: "only one" } }),
      (error: unknown) => error instanceof McpError && error.code === -32602,
    );
  });

  test("completion/complete suggests prompt arguments and template variables by prefix", async () => {
    const forPrompt = await client.complete({ ref: { type: "ref/prompt", name: "test_prompt_with_arguments" }, argument: { name: "arg1", value: "par" } });
    assert.deepEqual(forPrompt.completion, { values: ["paris", "park", "party"], total: 3, hasMore: false });
    const forTemplate = await client.complete({ ref: { type: "ref/resource", uri: "test://template/{id}/data" }, argument: { name: "id", value: "12" } });
    assert.deepEqual(forTemplate.completion.values, ["123"]);
    const none = await client.complete({ ref: { type: "ref/prompt", name: "test_simple_prompt" }, argument: { name: "x", value: "" } });
    assert.deepEqual(none.completion.values, []);
  });

  test("ping answers {}", async () => {
    assert.deepEqual(await client.ping(), {});
  });

  test("a client without sampling or elicitation gets a tool error instead of a request it cannot answer", async () => {
    const plain = new Client({ name: "plain-client", version: "0.0.0" });
    await connect(plain);
    try {
      for (const [name, args] of [
        ["test_sampling", { prompt: "hi" }],
        ["test_elicitation", { message: "hi" }],
      ] as const) {
        const result = (await plain.callTool({ name, arguments: args })) as CallToolResult;
        assert.equal(result.isError, true, name);
        assert.match(textOf(result), /did not declare/);
      }
    } finally {
      await plain.close();
    }
  });
});
