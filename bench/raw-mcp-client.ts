/**
 * A minimal Streamable HTTP MCP client on fetch, for benchmarks: it measures the gateway and the VM, not a
 * client library's own work (the SDK Client compiles each tool's outputSchema on its first call, ~25 ms).
 */
export class RawMcpClient {
  /** The Mcp-Session-Id the gateway gave at initialize. */
  sessionId: string | undefined;
  /** The next request id; two clients sharing one session must not reuse each other's. */
  nextId = 1;

  constructor(
    /** Where requests go; a test may point it at another node of a cluster mid-session. */
    public url: string,
    /** An API key or access token, sent as a bearer credential. */
    private readonly token?: string,
  ) {}

  async initialize(): Promise<void> {
    await this.request("initialize", {
      protocolVersion: "2025-11-25",
      capabilities: {},
      clientInfo: { name: "bench", version: "0" },
    });
    await this.post({ jsonrpc: "2.0", method: "notifications/initialized" });
  }

  async request(method: string, params: Record<string, unknown>): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    const response = await this.post({ jsonrpc: "2.0", id, method, params });
    const message = await readReply(response, id);
    if (message.error) throw new Error(`${method}: ${JSON.stringify(message.error)}`);
    return message.result as Record<string, unknown>;
  }

  async close(): Promise<void> {
    if (this.sessionId) await fetch(this.url, { method: "DELETE", headers: this.headers() });
  }

  private headers(): Record<string, string> {
    return {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": "2025-11-25",
      ...(this.sessionId ? { "mcp-session-id": this.sessionId } : {}),
      ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
    };
  }

  private async post(body: unknown): Promise<Response> {
    const response = await fetch(this.url, { method: "POST", headers: this.headers(), body: JSON.stringify(body) });
    this.sessionId ??= response.headers.get("mcp-session-id") ?? undefined;
    if (!response.ok) throw new Error(`HTTP ${response.status}: ${await response.text()}`);
    return response;
  }
}

async function readReply(response: Response, id: number): Promise<Record<string, unknown>> {
  if (response.headers.get("content-type")?.includes("application/json")) return (await response.json()) as Record<string, unknown>;
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error("stream ended without a reply");
    buffered += value;
    for (let end = buffered.indexOf("\n\n"); end !== -1; end = buffered.indexOf("\n\n")) {
      const event = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("").trim();
      if (!data) continue;
      const message = JSON.parse(data) as Record<string, unknown>;
      if (message.id === id) {
        await reader.cancel();
        return message;
      }
    }
  }
}
