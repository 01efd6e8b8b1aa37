import assert from "node:assert/strict";
import { test } from "node:test";
import { JSONRPCMessageSchema } from "@modelcontextprotocol/sdk/types.js";
import { parseJsonRpc, toJsonRpcMessage } from "./json-rpc.js";

// Messages near the edge of what the SDK's schema accepts: the shortcut for plain requests must never
// accept one the schema refuses, nor refuse one it accepts.
const CASES: unknown[] = [
  { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "t", arguments: {} } },
  { jsonrpc: "2.0", id: "a", method: "tools/list" },
  { jsonrpc: "2.0", method: "notifications/initialized" },
  { jsonrpc: "2.0", id: 7, method: "tools/call", params: { name: "t", _meta: { progressToken: 3 } } },
  { jsonrpc: "2.0", id: 7, method: "tools/call", params: { name: "t", _meta: { progressToken: "p", traceparent: "00-x" } } },
  { jsonrpc: "2.0", id: 7, method: "tools/call", params: { _meta: {} } },
  { jsonrpc: "2.0", id: 7, method: "tools/call", params: { _meta: { progressToken: 1.5 } } },
  { jsonrpc: "2.0", id: 7, method: "tools/call", params: { _meta: { progressToken: null } } },
  { jsonrpc: "2.0", id: 7, method: "tools/call", params: { _meta: null } },
  { jsonrpc: "2.0", id: 7, method: "tools/call", params: { _meta: [] } },
  { jsonrpc: "2.0", id: 7, method: "tools/call", params: { _meta: { "io.modelcontextprotocol/related-task": { taskId: "x" } } } },
  { jsonrpc: "2.0", id: 7, method: "tools/call", params: { _meta: { "io.modelcontextprotocol/related-task": {} } } },
  { jsonrpc: "2.0", id: 7, method: "tools/call", params: [] },
  { jsonrpc: "2.0", id: 7, method: "tools/call", params: null },
  { jsonrpc: "2.0", id: 7, method: "tools/call", params: "x" },
  { jsonrpc: "2.0", id: 1.5, method: "ping" },
  { jsonrpc: "2.0", id: null, method: "ping" },
  { jsonrpc: "2.0", id: true, method: "ping" },
  { jsonrpc: "2.0", id: 2 ** 60, method: "ping" },
  { jsonrpc: "2.0", id: -3, method: "ping" },
  { jsonrpc: "2.0", id: 1, method: 5 },
  { jsonrpc: "1.0", id: 1, method: "ping" },
  { id: 1, method: "ping" },
  { jsonrpc: "2.0", id: 1, method: "ping", extra: true },
  JSON.parse('{"jsonrpc":"2.0","id":1,"method":"ping","__proto__":{"x":1}}'),
  { jsonrpc: "2.0", id: 1, result: {} },
  { jsonrpc: "2.0", id: 1, error: { code: -32601, message: "no" } },
  { jsonrpc: "2.0", id: 1, result: {}, method: "ping" },
  { jsonrpc: "2.0" },
  [],
  null,
  "ping",
];

test("a message is accepted exactly when the SDK's JSON-RPC schema accepts it", () => {
  for (const value of CASES) {
    const expected = JSONRPCMessageSchema.safeParse(value);
    const message = toJsonRpcMessage(value);
    assert.equal(message !== undefined, expected.success, JSON.stringify(value));
    if (message) assert.deepEqual(message, expected.data, JSON.stringify(value));
  }
});

test("a plain request is taken as it is, without the schema's copy", () => {
  const call = CASES[3];
  assert.equal(toJsonRpcMessage(call), call);
  const withTask = CASES[10];
  assert.notEqual(toJsonRpcMessage(withTask), withTask);
});

test("text that is not one JSON-RPC message gets the JSON-RPC error that says why", () => {
  const unparsable = parseJsonRpc("{", 64);
  assert.deepEqual(unparsable.ok ? undefined : [unparsable.id, unparsable.code], [null, -32700]);
  const refused = parseJsonRpc('{"jsonrpc":"2.0","id":4,"method":5}', 64);
  assert.equal(refused.ok, false);
  assert.deepEqual(refused.ok ? undefined : [refused.id, refused.code], [4, -32600]);
  const accepted = parseJsonRpc('{"jsonrpc":"2.0","id":4,"method":"tools/list"}', 64);
  assert.deepEqual(accepted, { ok: true, message: { jsonrpc: "2.0", id: 4, method: "tools/list" } });
});
