/**
 * The gateway as an OAuth 2.1 resource server (MCP authorization spec), against a real local issuer:
 * metadata and keys over HTTP, tokens signed with a key made here. Each rule is tried from outside.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { generateKeyPair } from "jose";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { connectAs, heldWebSocket, INITIALIZE, LocalIssuer, post } from "./auth-helpers.js";
import { startReadyGateway } from "./helpers.js";

describe("OAuth access tokens", { timeout: 180_000 }, () => {
  let issuer: LocalIssuer;
  let gateway: Awaited<ReturnType<typeof startReadyGateway>>;
  let base: string;
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

  before(async () => {
    issuer = await LocalIssuer.start();
    gateway = await startReadyGateway(
      { servers: ["memory", "exec"], oauthIssuer: issuer.url, oauthScopes: ["mcp:tools"], auditLog: "off" },
      { pool: { prestarted: 0, warm: 0 } },
    );
    base = `http://127.0.0.1:${gateway.port}`;
  });
  after(async () => {
    await gateway?.close();
    await issuer?.close();
  });

  test("publishes RFC 9728 protected-resource metadata, at the root and per path", async () => {
    const root = (await (await fetch(`${base}/.well-known/oauth-protected-resource`)).json()) as Record<string, unknown>;
    assert.equal(root.resource, base);
    assert.deepEqual(root.authorization_servers, [issuer.url]);
    assert.deepEqual(root.bearer_methods_supported, ["header"]);
    const perPath = (await (await fetch(`${base}/.well-known/oauth-protected-resource/servers/memory/mcp`)).json()) as Record<string, unknown>;
    assert.equal(perPath.resource, `${base}/servers/memory/mcp`);
    assert.ok((perPath.scopes_supported as string[]).includes("mcp:tools"));
    assert.equal((await fetch(`${base}/.well-known/oauth-protected-resource/etc/passwd`)).status, 404, "only MCP resources have metadata");
  });

  test("401 names the metadata URL; a valid token for this resource gets in and is never passed on", async () => {
    const anonymous = await post(`${base}/mcp`, INITIALIZE);
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.headers.get("www-authenticate"), `Bearer realm="mcpvisor", resource_metadata="${base}/.well-known/oauth-protected-resource/mcp"`);

    const token = await issuer.token({ sub: "alice", tenant: "acme", aud: `${base}/servers/exec/mcp`, scope: "mcp:tools" });
    const client = await connectAs(`${base}/servers/exec/mcp`, token);
    const result = (await client.callTool({ name: "run", arguments: { command: "cat /proc/1/environ; env; ls -a /" } })) as CallToolResult;
    const out = JSON.stringify(result.structuredContent);
    assert.match(out, /PATH=/, "the command ran in the guest");
    assert.ok(!out.includes(token) && !out.includes(token.split(".")[2]!), "the guest never sees the client's token");
    await client.close();
  });

  test("refuses expired, foreign-audience, foreign-issuer and forged tokens with 401 invalid_token", async () => {
    const claims = { sub: "alice", tenant: "acme", scope: "mcp:tools" };
    const { privateKey: forger } = await generateKeyPair("ES256");
    const bad: Record<string, string> = {
      expired: await issuer.token({ ...claims, aud: `${base}/mcp` }, { expiresIn: Math.floor(Date.now() / 1000) - 60 }),
      "another service's audience": await issuer.token({ ...claims, aud: "https://other.example/mcp" }),
      "another server's audience": await issuer.token({ ...claims, aud: `${base}/servers/memory/mcp` }),
      "another issuer": await issuer.token({ ...claims, aud: `${base}/mcp` }, { issuer: "https://evil.example" }),
      "a key the issuer does not publish": await issuer.token({ ...claims, aud: `${base}/mcp` }, { key: forger }),
      "no tenant claim": await issuer.token({ sub: "alice", scope: "mcp:tools", aud: `${base}/mcp` }),
      "the local user's reserved tenant": await issuer.token({ sub: "mallory", tenant: "local", scope: "mcp:tools", aud: `${base}/mcp` }),
      "not a JWT": "abc.def.ghi",
    };
    for (const [why, token] of Object.entries(bad)) {
      const response = await post(`${base}/mcp`, INITIALIZE, bearer(token));
      assert.equal(response.status, 401, why);
      assert.match(response.headers.get("www-authenticate") ?? "", /error="invalid_token"/, why);
    }
  });

  test("a token without the required scope gets 403 insufficient_scope; admin scope opens /metrics", async () => {
    const unscoped = await issuer.token({ sub: "bob", tenant: "acme", aud: `${base}/mcp`, scope: "profile" });
    const response = await post(`${base}/mcp`, INITIALIZE, bearer(unscoped));
    assert.equal(response.status, 403);
    const challenge = response.headers.get("www-authenticate") ?? "";
    assert.match(challenge, /error="insufficient_scope"/);
    assert.match(challenge, /scope="mcp:tools"/);

    const user = await issuer.token({ sub: "carol", tenant: "acme", aud: base, scope: "mcp:tools" });
    const metricsAsUser = await fetch(`${base}/metrics`, { headers: bearer(user) });
    assert.equal(metricsAsUser.status, 403);
    assert.match(metricsAsUser.headers.get("www-authenticate") ?? "", /scope="mcpvisor:admin"/);
    const admin = await issuer.token({ sub: "root", tenant: "ops", aud: base, scope: "mcp:tools mcpvisor:admin" });
    assert.equal((await fetch(`${base}/metrics`, { headers: bearer(admin) })).status, 200);
  });

  test("a token's tools:<server>/<glob> scopes narrow what it may list and call", async () => {
    const token = await issuer.token({ sub: "dana", tenant: "acme", aud: `${base}/servers/memory/mcp`, scope: "mcp:tools tools:memory/read_*" });
    const client = await connectAs(`${base}/servers/memory/mcp`, token);
    assert.deepEqual((await client.listTools()).tools.map((t) => t.name), ["read_graph"]);
    await assert.rejects(client.callTool({ name: "search_nodes", arguments: { query: "x" } }), /Unknown tool 'search_nodes'/);
    await client.close();
  });

  test("the tenant comes from the token: another tenant's token cannot use the session", async () => {
    const acmeToken = await issuer.token({ sub: "alice", tenant: "acme", aud: `${base}/servers/memory/mcp`, scope: "mcp:tools" });
    const globexToken = await issuer.token({ sub: "eve", tenant: "globex", aud: `${base}/servers/memory/mcp`, scope: "mcp:tools" });
    const acme = await connectAs(`${base}/servers/memory/mcp`, acmeToken);
    await acme.callTool({ name: "read_graph", arguments: {} });
    const sessionId = (acme.transport as { sessionId?: string }).sessionId!;
    const crossed = await post(
      `${base}/servers/memory/mcp`,
      { jsonrpc: "2.0", id: 2, method: "tools/list" },
      { ...bearer(globexToken), "mcp-session-id": sessionId, "mcp-protocol-version": "2025-11-25" },
    );
    assert.equal(crossed.status, 404);
    await acme.close();
  });

  test("a WebSocket opened with an access token is closed once the token is no longer accepted", async () => {
    const token = await issuer.token({ sub: "alice", tenant: "acme", aud: base, scope: "mcp:tools" }, { expiresIn: "2s" });
    const opened = Date.now();
    const socket = await heldWebSocket(base, `Bearer ${token}`);
    const how = await Promise.race([socket.ended, new Promise<string>((r) => setTimeout(() => r("still open"), 20_000))]);
    socket.close();
    assert.match(how, /^1008 the access token expired/);
    // Accepted until its expiry plus the 5 s the gateway allows for clock skew, like any request.
    assert.ok(Date.now() - opened >= 5_000, `closed after ${Date.now() - opened} ms, before the token stopped being accepted`);
  });
});

test("an issuer out of reach is the gateway's trouble: 503 with Retry-After, not a 401 that sends clients to log in again", { timeout: 120_000 }, async () => {
  const issuer = await LocalIssuer.start();
  const token = await issuer.token({ sub: "alice", tenant: "acme", aud: "http://127.0.0.1/mcp", scope: "mcp:tools" });
  await issuer.close(); // its metadata and keys are gone
  const gateway = await startReadyGateway({ servers: ["memory"], oauthIssuer: issuer.url, auditLog: "off" }, { pool: { prestarted: 0, warm: 0 } });
  try {
    for (let i = 0; i < 2; i++) {
      const response = await post(`http://127.0.0.1:${gateway.port}/mcp`, INITIALIZE, { authorization: `Bearer ${token}` });
      assert.equal(response.status, 503);
      assert.equal(response.headers.get("retry-after"), "5");
      assert.match(((await response.json()) as { error: { message: string } }).error.message, /cannot be checked right now: the issuer's metadata cannot be read/);
    }
    assert.equal((await post(`http://127.0.0.1:${gateway.port}/mcp`, INITIALIZE)).status, 401, "no token at all is still 401");
  } finally {
    await gateway.close();
  }
});
