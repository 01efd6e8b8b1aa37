import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { ErrorCode, McpError, type CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { eventually } from "./helpers.js";

/** The suite's tests by name, for `skip`. */
export const FACE_TESTS = {
  roundTrip: "initialize, tools/list and tools/call hold one sandbox; disconnecting releases it",
  aggregate: "the aggregate: namespaced tools, each call routed to its server",
  unknownTool: "an unknown tool is -32602 with a message naming the tool",
  parseError: "malformed JSON gets a parse error (-32700)",
  unknownServer: "a server not hosted here is refused with a message naming it",
} as const;

type FaceTest = keyof typeof FACE_TESTS;

/** One face as the suite drives it; every face of the gateway runs the same suite (as hono's routers run one). */
export interface FaceUnderTest {
  name: string;
  /** A client transport to `route` (a server's name, or "*" for every server aggregated), not started. */
  transport(route: string): Transport;
  /** Ends the session as this face's clients do; closing the client unless the face needs more (Streamable HTTP: DELETE). */
  disconnect?(client: Client, transport: Transport): Promise<void>;
  /** Sends `text` as one message to a session of `server`; resolves with the JSON-RPC error it gets back. */
  sendRaw?(server: string, text: string): Promise<{ code: number; message: string }>;
  /** Opens a session on `server`, which is not hosted; resolves with the refusal (HTTP status where the face has one). */
  openUnknown(server: string): Promise<{ status?: number; message: string }>;
  /** Sandboxes of `server` leased now (the pool behind the face). */
  leased(server: string): number;
  /** Tests this face cannot run, and why (as hono's `skip: [{ reason, tests }]`). */
  skip?: Array<{ reason: string; tests: FaceTest[] }>;
}

/** The face suite; needs the `exec` server hosted. */
export function runFaceSuite(face: FaceUnderTest): void {
  const skipped = (name: FaceTest) => face.skip?.find((s) => s.tests.includes(name))?.reason ?? false;
  const it = (name: FaceTest, fn: () => Promise<void>) => test(FACE_TESTS[name], { skip: skipped(name) }, fn);

  async function connected(route: string): Promise<{ client: Client; transport: Transport }> {
    const transport = face.transport(route);
    const client = new Client({ name: "mcpvisor-face-suite", version: "0.0.0" });
    await client.connect(transport);
    return { client, transport };
  }

  async function disconnect({ client, transport }: { client: Client; transport: Transport }): Promise<void> {
    await (face.disconnect ? face.disconnect(client, transport) : client.close());
  }

  /** Lists tools, runs `echo hi` in an exec sandbox, disconnects, and checks the sandbox was released. */
  async function roundTrip(route: string, run: string): Promise<void> {
    const before = face.leased("exec");
    const session = await connected(route);
    try {
      const { tools } = await session.client.listTools();
      assert.ok(tools.some((t) => t.name === run), `${run} is listed`);
      const result = (await session.client.callTool({ name: run, arguments: { command: "echo hi" } })) as CallToolResult;
      assert.equal((result.structuredContent as { stdout: string }).stdout, "hi\n");
      assert.equal(face.leased("exec"), before + 1, "the session holds one sandbox");
    } finally {
      await disconnect(session);
    }
    await eventually(() => face.leased("exec") === before, "disconnecting released the session's sandbox", 15_000);
  }

  describe(`face suite: ${face.name}`, () => {
    it("roundTrip", () => roundTrip("exec", "run"));

    it("aggregate", () => roundTrip("*", "exec__run"));

    it("unknownTool", async () => {
      const session = await connected("exec");
      try {
        const error = await session.client.callTool({ name: "no_such_tool", arguments: {} }).then(
          () => assert.fail("an unknown tool was called"),
          (e: unknown) => e,
        );
        assert.ok(error instanceof McpError, String(error));
        assert.equal(error.code, ErrorCode.InvalidParams);
        assert.match(error.message, /'no_such_tool'/);
      } finally {
        await disconnect(session);
      }
    });

    it("parseError", async () => {
      const reply = await face.sendRaw!("exec", "{not json");
      assert.equal(reply.code, ErrorCode.ParseError);
      assert.match(reply.message, /Parse error/);
    });

    it("unknownServer", async () => {
      const refused = await face.openUnknown("nope");
      if (refused.status !== undefined) assert.equal(refused.status, 404);
      assert.match(refused.message, /No hosted server (is )?named 'nope'/);
    });
  });
}
