import assert from "node:assert/strict";
import { test } from "node:test";
import { AccessRules, AccessRulesSchema } from "./access-rules.js";

const rules = (input: unknown, scopes?: string[]) => new AccessRules(AccessRulesSchema.parse(input), scopes);

test("tools: allow globs, deny wins, required annotations (a tool that does not say lacks them)", () => {
  const r = rules({ tools: { allow: ["memory/*", "exec/run"], deny: ["memory/delete_*"], annotations: { readOnlyHint: true } } });
  assert.equal(r.tool("memory", { name: "read_graph", annotations: { readOnlyHint: true } }), true);
  assert.equal(r.tool("memory", { name: "create_entities", annotations: { readOnlyHint: false } }), false, "annotation");
  assert.equal(r.tool("memory", { name: "search_nodes" }), false, "no annotations: not read-only");
  assert.equal(r.tool("memory", { name: "delete_entities", annotations: { readOnlyHint: true } }), false, "deny wins");
  assert.equal(r.tool("git", { name: "git_log", annotations: { readOnlyHint: true } }), false, "not allowed");
  assert.equal(rules({}).tool("git", { name: "anything" }), true, "no rules: everything");
});

test("a token's tools: scopes narrow the tenant's tools; prompts and resources have rules of their own", () => {
  const r = rules({ resources: { deny: ["memory/secret://*"] }, prompts: { allow: ["everything/simple_*"] } }, ["memory/read_*"]);
  assert.equal(r.tool("memory", { name: "read_graph" }), true);
  assert.equal(r.tool("memory", { name: "open_nodes" }), false);
  assert.equal(r.resource("memory", "secret://a"), false);
  assert.equal(r.resource("memory", "file:///a"), true);
  assert.equal(r.prompt("everything", "simple_prompt"), true);
  assert.equal(r.prompt("everything", "complex_prompt"), false);
});

test("a pattern that is not '<server>/<name>' is refused with where it is", () => {
  assert.throws(() => AccessRulesSchema.parse({ tools: { allow: ["read_graph"] } }), /server>\/<name>/);
});
