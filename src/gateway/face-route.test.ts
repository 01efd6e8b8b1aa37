import assert from "node:assert/strict";
import { test } from "node:test";
import { AGGREGATE } from "../router/router.js";
import { faceRoute } from "./face-route.js";

test("a face URL names the aggregate or one server; anything else names no route", () => {
  assert.equal(faceRoute("/mcp", "mcp"), AGGREGATE);
  assert.equal(faceRoute("/mcp?x=1", "mcp"), AGGREGATE);
  assert.equal(faceRoute("/servers/memory/mcp", "mcp"), "memory");
  assert.equal(faceRoute("/servers/memory/ws", "ws"), "memory");
  for (const url of ["/", "/mcp/", "/servers//mcp", "/servers/a/b/mcp", "/servers/memory/sse", "/serversx/mcp", undefined]) {
    assert.equal(faceRoute(url, "mcp"), undefined, String(url));
  }
});
