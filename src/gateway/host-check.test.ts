import assert from "node:assert/strict";
import { test } from "node:test";
import { HostPolicy } from "./host-check.js";

test("loopback names and the bound address pass; other hosts and origins are refused", () => {
  const policy = new HostPolicy("127.0.0.1", ["mcp.example.org"]);
  for (const host of ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "localhost", "mcp.example.org:443"]) {
    assert.equal(policy.refusal(host, undefined), undefined, host);
  }
  assert.match(policy.refusal("evil.example.com:8080", undefined)!, /Host 'evil.example.com:8080'/);
  assert.match(policy.refusal("127.0.0.1:8080", "http://evil.example.com")!, /Origin/);
  assert.equal(policy.refusal("127.0.0.1:8080", "http://localhost:3000"), undefined);
  assert.match(policy.refusal(undefined, undefined)!, /missing Host/);
  assert.match(policy.refusal("localhost", "not a url")!, /not a URL/);
});
