/**
 * A minimal Streamable HTTP MCP client on node:http with one keep-alive socket per client: the load
 * generator of bench/gateway. Like raw-mcp-client.ts it does no schema work, so what it measures is the
 * gateway's; unlike it, it reads every response to its end (an SSE request stream ends after its reply),
 * so the socket is reused instead of being torn down by a cancelled body.
 */
import { Agent, request } from "node:http";

/** The 2026-07-28 envelope every request of a stateless client carries. */
const MODERN_META = {
  "io.modelcontextprotocol/protocolVersion": "2026-07-28",
  "io.modelcontextprotocol/clientCapabilities": {},
};

export class KeepAliveMcpClient {
  private sessionId: string | undefined;
  private nextId = 1;
  /** The JSON-RPC id of the newest request, so a caller can match it with the server side's records. */
  lastId = 0;
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 1, keepAliveMsecs: 60_000 });
  private readonly target: URL;

  /** `2026-07-28`: no initialize, no session; every request carries `_meta` and the SEP-2243 headers. */
  constructor(url: string, private readonly era: "2025-11-25" | "2026-07-28" = "2025-11-25") {
    this.target = new URL(url);
  }

  async initialize(): Promise<void> {
    if (this.era === "2026-07-28") return void (await this.request("server/discover", {}));
    await this.request("initialize", {
      protocolVersion: "2025-11-25",
      capabilities: {},
      clientInfo: { name: "bench", version: "0" },
    });
    await this.post(JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }));
  }

  async request(method: string, params: Record<string, unknown>): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    this.lastId = id;
    const modern = this.era === "2026-07-28";
    const sent = modern ? { ...params, _meta: MODERN_META } : params;
    const headers = modern ? { "mcp-method": method, ...(typeof params.name === "string" ? { "mcp-name": params.name } : {}) } : {};
    const { status, body, contentType } = await this.send("POST", JSON.stringify({ jsonrpc: "2.0", id, method, params: sent }), headers);
    if (status !== 200) throw new Error(`${method}: HTTP ${status}: ${body.slice(0, 300)}`);
    const message = parseReply(body, contentType, id);
    if (message.error) throw new Error(`${method}: ${JSON.stringify(message.error)}`);
    return message.result as Record<string, unknown>;
  }

  async close(): Promise<void> {
    try {
      if (this.sessionId) await this.send("DELETE", undefined);
    } catch {
      // the gateway may already be gone
    }
    this.agent.destroy();
  }

  private post(body: string): Promise<{ status: number; body: string; contentType: string }> {
    return this.send("POST", body);
  }

  private send(method: string, body: string | undefined, extra: Record<string, string> = {}): Promise<{ status: number; body: string; contentType: string }> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string | number> = {
        accept: "application/json, text/event-stream",
        "mcp-protocol-version": this.era,
        ...extra,
      };
      if (body !== undefined) {
        headers["content-type"] = "application/json";
        headers["content-length"] = Buffer.byteLength(body);
      }
      if (this.sessionId) headers["mcp-session-id"] = this.sessionId;
      const req = request(
        { host: this.target.hostname, port: this.target.port, path: this.target.pathname, method, headers, agent: this.agent },
        (res) => {
          const sid = res.headers["mcp-session-id"];
          if (typeof sid === "string") this.sessionId ??= sid;
          res.setEncoding("utf8");
          let text = "";
          res.on("data", (chunk: string) => (text += chunk));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text, contentType: String(res.headers["content-type"] ?? "") }));
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end(body);
    });
  }
}

function parseReply(body: string, contentType: string, id: number): Record<string, unknown> {
  if (contentType.includes("application/json")) return JSON.parse(body) as Record<string, unknown>;
  for (const event of body.split("\n\n")) {
    const data = event
      .split("\n")
      .filter((l) => l.startsWith("data:"))
      .map((l) => l.slice(5))
      .join("");
    if (!data.trim()) continue; // e.g. a priming event with an empty data line
    const message = JSON.parse(data) as Record<string, unknown>;
    if (message.id === id) return message;
  }
  throw new Error(`no reply to request ${id} in the response`);
}
