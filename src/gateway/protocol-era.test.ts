import assert from "node:assert/strict";
import { test } from "node:test";
import { eraOf, mayBeModern } from "./protocol-era.js";

const META = { "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {} };
const call = (name: string) => ({ jsonrpc: "2.0", id: 5, method: "tools/call", params: { name, arguments: {}, _meta: META } });
const headers = (extra: Record<string, string> = {}) => ({ "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "echo", ...extra });

test("2025-era traffic stays legacy: initialize, and requests without an envelope", () => {
  const initialize = { jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "c", version: "1" } } };
  assert.deepEqual(eraOf({}, initialize), { era: "legacy" });
  assert.deepEqual(eraOf({ "mcp-protocol-version": "2025-11-25" }, { jsonrpc: "2.0", id: 2, method: "tools/list" }), { era: "legacy" });
  assert.equal(mayBeModern(JSON.stringify(initialize), {}), false);
});

test("a request with the envelope and matching headers is modern", () => {
  const outcome = eraOf(headers(), call("echo"));
  assert.equal(outcome.era, "modern");
  assert.equal(mayBeModern(JSON.stringify(call("echo")), {}), true);
  assert.equal(mayBeModern("{}", { "mcp-protocol-version": "2026-07-28" }), true);
});

test("header checks: whitespace is not part of a value, Base64 names decode, anything else that disagrees is -32020", () => {
  assert.equal(eraOf(headers({ "mcp-name": "  echo  " }), call("echo")).era, "modern");
  assert.equal(eraOf(headers({ "mcp-name": `=?base64?${Buffer.from("échø").toString("base64")}?=` }), call("échø")).era, "modern");
  const bad: Record<string, string>[] = [{ "mcp-name": "other" }, { "mcp-name": "=?base64?not base64!?=" }, { "mcp-method": "TOOLS/CALL" }];
  for (const extra of bad) {
    const outcome = eraOf(headers(extra), call("echo"));
    assert.equal(outcome.era, "refused", JSON.stringify(extra));
    if (outcome.era !== "refused") continue;
    assert.equal(outcome.status, 400);
    assert.equal(outcome.error.code, -32020);
    assert.equal(outcome.id, 5, "the refusal names the request");
  }
  const { "mcp-name": _dropped, ...withoutName } = headers();
  assert.equal(eraOf(withoutName, call("echo")).era, "refused", "Mcp-Name is required when the body names a tool");
});

test("a revision not served here is -32022 with the supported list and the requested one", () => {
  const body = { ...call("echo"), params: { ...call("echo").params, _meta: { ...META, "io.modelcontextprotocol/protocolVersion": "2027-01-01" } } };
  const outcome = eraOf(headers({ "mcp-protocol-version": "2027-01-01" }), body);
  assert.equal(outcome.era, "refused");
  if (outcome.era === "refused") assert.deepEqual([outcome.status, outcome.error.code, outcome.error.data], [400, -32022, { supported: ["2026-07-28"], requested: "2027-01-01" }]);
});
