import { createServer, type Server } from "node:http";
import { writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { exportJWK, generateKeyPair, SignJWT, type JWTPayload } from "jose";
import { generateKey } from "../src/auth/api-keys.js";
import type { AccessRulesText } from "../src/auth/access-rules.js";
import type { TenantsFile } from "../src/auth/tenants-file.js";
import { scratchDir } from "./scratch-dir.js";

type TenantsInput = { defaults?: Partial<TenantsFile["defaults"]>; tenants: Record<string, { servers?: string[]; admin?: boolean; limits?: Partial<TenantsFile["defaults"]>; access?: AccessRulesText }> };

/**
 * A tenants file in a fresh directory, with one API key per tenant (named after it); the keys are
 * returned, as `mcpvisor keys add` would print them.
 */
export async function tenantsFileWith(input: TenantsInput): Promise<{ path: string; dir: string; keys: Record<string, string> }> {
  const dir = await scratchDir("mcpv-auth");
  const keys: Record<string, string> = {};
  const entries = Object.keys(input.tenants).map((tenant) => {
    const { key, sha256 } = generateKey();
    keys[tenant] = key;
    return { id: `${tenant}-key`, tenant, sha256 };
  });
  const path = join(dir, "tenants.json");
  await writeFile(path, JSON.stringify({ defaults: input.defaults ?? {}, tenants: input.tenants, keys: entries }), { mode: 0o600 });
  return { path, dir, keys };
}

/** An MCP client over Streamable HTTP that sends `Authorization: Bearer <token>`. */
export async function connectAs(url: string, token: string): Promise<Client> {
  const client = new Client({ name: "mcpvisor-auth-test", version: "0.0.0" });
  await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
  return client;
}

/** Ends the client's session at the gateway (DELETE; `Client.close()` alone does not) and closes it. */
export async function endSession(client: Client): Promise<void> {
  await (client.transport as unknown as StreamableHTTPClientTransport).terminateSession();
  await client.close();
}

/** A raw JSON-RPC POST, for looking at status codes and headers the SDK client hides. */
export function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

export const INITIALIZE = {
  jsonrpc: "2.0",
  id: 1,
  method: "initialize",
  params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "raw", version: "0" } },
};

/**
 * A real OAuth authorization server, as far as a resource server sees one: RFC 8414 metadata naming a
 * JWKS, the JWKS itself (an ES256 key made here), and tokens signed with that key. Nothing is stubbed
 * in the gateway: it fetches the metadata and keys over HTTP like it would from any issuer.
 */
export class LocalIssuer {
  private constructor(
    private readonly server: Server,
    readonly url: string,
    private readonly privateKey: CryptoKey,
  ) {}

  static async start(): Promise<LocalIssuer> {
    const { publicKey, privateKey } = await generateKeyPair("ES256");
    const jwk = { ...(await exportJWK(publicKey)), kid: "test-key", alg: "ES256", use: "sig" };
    let url = "";
    const server = createServer((req, res) => {
      res.setHeader("content-type", "application/json");
      if (req.url === "/.well-known/oauth-authorization-server") {
        res.end(JSON.stringify({ issuer: url, jwks_uri: `${url}/jwks`, authorization_endpoint: `${url}/authorize`, token_endpoint: `${url}/token` }));
      } else if (req.url === "/jwks") {
        res.end(JSON.stringify({ keys: [jwk] }));
      } else {
        res.statusCode = 404;
        res.end("{}");
      }
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return new LocalIssuer(server, url, privateKey);
  }

  /** A signed access token; `expiresIn` like "5m" or a past epoch second. */
  async token(claims: JWTPayload & { aud: string | string[] }, options: { expiresIn?: string | number; issuer?: string; key?: CryptoKey } = {}): Promise<string> {
    return new SignJWT(claims)
      .setProtectedHeader({ alg: "ES256", kid: "test-key" })
      .setIssuer(options.issuer ?? this.url)
      .setIssuedAt()
      .setExpirationTime(options.expiresIn ?? "5m")
      .sign(options.key ?? this.privateKey);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** The ways a client holds a connection open past one request, each opened with `authorization`. */
export interface HeldConnection {
  what: string;
  /** Resolves when the gateway ends the connection, with how (a WebSocket's close code, or "ended"). */
  ended: Promise<string>;
  close(): void;
}

/** A WebSocket session, initialized (so the gateway has a session on it), until the gateway closes it. */
export async function heldWebSocket(base: string, authorization: string): Promise<HeldConnection> {
  const { WebSocket } = await import("ws");
  const ws = new WebSocket(`${base.replace(/^http/, "ws")}/servers/memory/ws`, "mcp", { headers: { authorization } });
  const ended = new Promise<string>((resolve) => ws.once("close", (code, reason) => resolve(`${code} ${reason.toString()}`)));
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => ws.send(JSON.stringify(INITIALIZE)));
    ws.once("message", () => resolve());
    ws.once("error", reject);
  });
  return { what: "WebSocket", ended, close: () => ws.close() };
}

/** An SSE stream read to its end: a Streamable HTTP session's GET stream, or a legacy SSE session. */
async function heldStream(what: string, response: Response, opened: (text: string) => boolean): Promise<HeldConnection> {
  if (response.status !== 200) throw new Error(`${what}: HTTP ${response.status}`);
  const reader = response.body!.getReader();
  let text = "";
  while (!opened(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${what} ended before it opened`);
    text += new TextDecoder().decode(value);
  }
  const ended = (async () => {
    while (!(await reader.read().catch(() => ({ done: true }))).done);
    return "ended";
  })();
  return { what, ended, close: () => void reader.cancel().catch(() => undefined) };
}

export async function heldGetStream(base: string, authorization: string): Promise<HeldConnection> {
  const url = `${base}/servers/memory/mcp`;
  const init = await post(url, INITIALIZE, { authorization });
  const session = init.headers.get("mcp-session-id")!;
  const headers = { authorization, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25" };
  await post(url, { jsonrpc: "2.0", method: "notifications/initialized" }, headers);
  // The stream is open once its headers are in (an SSE comment or event may follow, or nothing yet).
  const response = await fetch(url, { headers: { ...headers, accept: "text/event-stream" } });
  return heldStream("Streamable HTTP GET stream", response, () => true);
}

export async function heldLegacySse(base: string, authorization: string): Promise<HeldConnection> {
  const response = await fetch(`${base}/servers/memory/sse`, { headers: { authorization, accept: "text/event-stream" } });
  return heldStream("legacy SSE stream", response, (text) => text.includes("event: endpoint"));
}
