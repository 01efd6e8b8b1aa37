import { RED_PIXEL_PNG_BASE64, silentWavBase64 } from "./media.js";
import { type ConformanceTool, NO_ARGUMENTS, textResult } from "./tool-kit.js";

/** Tools whose result is fixed: one per content type, plus the error and JSON Schema 2020-12 cases. */
export const contentTools: ConformanceTool[] = [
  {
    definition: {
      name: "test_simple_text",
      description: "Returns one text block. Takes no arguments.",
      inputSchema: NO_ARGUMENTS,
      annotations: { readOnlyHint: true },
    },
    run: async () => textResult("This is a simple text response for testing."),
  },
  {
    definition: {
      name: "test_image_content",
      description: "Returns one image block: a 1x1 red PNG.",
      inputSchema: NO_ARGUMENTS,
      annotations: { readOnlyHint: true },
    },
    run: async () => ({ content: [{ type: "image", data: RED_PIXEL_PNG_BASE64, mimeType: "image/png" }] }),
  },
  {
    definition: {
      name: "test_audio_content",
      description: "Returns one audio block: 10 ms of silence as audio/wav.",
      inputSchema: NO_ARGUMENTS,
      annotations: { readOnlyHint: true },
    },
    run: async () => ({ content: [{ type: "audio", data: silentWavBase64(), mimeType: "audio/wav" }] }),
  },
  {
    definition: {
      name: "test_embedded_resource",
      description: "Returns one embedded text resource (test://embedded-resource).",
      inputSchema: NO_ARGUMENTS,
      annotations: { readOnlyHint: true },
    },
    run: async () => ({
      content: [
        {
          type: "resource",
          resource: {
            uri: "test://embedded-resource",
            mimeType: "text/plain",
            text: "This is an embedded resource content.",
          },
        },
      ],
    }),
  },
  {
    definition: {
      name: "test_multiple_content_types",
      description: "Returns a text, an image and an embedded JSON resource block in one result.",
      inputSchema: NO_ARGUMENTS,
      annotations: { readOnlyHint: true },
    },
    run: async () => ({
      content: [
        { type: "text", text: "Multiple content types test:" },
        { type: "image", data: RED_PIXEL_PNG_BASE64, mimeType: "image/png" },
        {
          type: "resource",
          resource: {
            uri: "test://mixed-content-resource",
            mimeType: "application/json",
            text: JSON.stringify({ test: "data", value: 123 }),
          },
        },
      ],
    }),
  },
  {
    definition: {
      name: "test_error_handling",
      description: "Always fails, as a tool execution error (isError: true), not a JSON-RPC error.",
      inputSchema: NO_ARGUMENTS,
      annotations: { readOnlyHint: true },
    },
    run: async () => textResult("This tool intentionally returns an error for testing", true),
  },
  {
    definition: {
      name: "json_schema_2020_12_tool",
      description: "Tool with JSON Schema 2020-12 features ($schema, $defs, $anchor, $ref, allOf/anyOf, if/then/else, additionalProperties); echoes its arguments.",
      // Listed verbatim: the scenario checks that $schema, $defs and additionalProperties survive the trip.
      inputSchema: {
        $schema: "https://json-schema.org/draft/2020-12/schema",
        type: "object",
        $defs: {
          address: {
            $anchor: "address",
            type: "object",
            properties: { street: { type: "string" }, city: { type: "string" } },
          },
        },
        properties: {
          name: { type: "string" },
          address: { $ref: "#/$defs/address" },
        },
        // SEP-2106's broader vocabulary: composition and conditionals, none of which narrows what is valid.
        allOf: [{ anyOf: [{ type: "object" }, { required: ["name"] }] }],
        if: { required: ["name"] },
        then: { properties: { name: { type: "string" } } },
        else: { properties: { address: { $ref: "#/$defs/address" } } },
        additionalProperties: false,
      },
      annotations: { readOnlyHint: true },
    },
    run: async (args) => textResult(`Received arguments: ${JSON.stringify(args)}`),
  },
  {
    definition: {
      name: "test_header_param",
      description: "Echoes `region`, which clients also send as the Mcp-Param-Region header (SEP-2243 x-mcp-header).",
      inputSchema: {
        type: "object",
        properties: { region: { type: "string", "x-mcp-header": "Region" } },
        required: ["region"],
      },
      annotations: { readOnlyHint: true },
    },
    run: async (args) => textResult(`region=${String(args.region)}`),
  },
];
