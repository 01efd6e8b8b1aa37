import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import {
  ErrorCode,
  SUPPORTED_PROTOCOL_VERSIONS,
  LATEST_PROTOCOL_VERSION,
  type JSONRPCMessage,
  type RequestId,
} from "@modelcontextprotocol/sdk/types.js";
import type { Logger } from "pino";
import type { JsonRpcMessage } from "../../sandbox/agent/protocol.js";
import type { SandboxError } from "../sandbox/errors.js";
import type { SandboxPool } from "../sandbox/pool.js";
import type { Sandbox } from "../sandbox/sandbox.js";
import { toJsonRpcError, type JsonRpcErrorObject } from "./to-wire.js";
import { ToolArgumentChecker } from "./tool-arguments.js";

/**
 * One client's MCP session on one hosted server. The gateway answers `initialize` and `ping` itself
 * (the server in the clone was initialized before the template snapshot); everything else passes
 * through to the session's sandbox unchanged, in both directions.
 */
export class ClientSession {
  private sandbox: Sandbox | undefined;
  private acquiring: Promise<Sandbox> | undefined;
  /** Client requests in flight, in arrival order, with their progress tokens. */
  private readonly inFlight = new Map<RequestId, string | number | undefined>();
  private readonly closedListeners = new Set<() => void>();
  private argumentChecker: Promise<ToolArgumentChecker> | undefined;
  private closed = false;

  constructor(
    readonly server: string,
    private readonly transport: Transport,
    private readonly pool: SandboxPool,
    private readonly log: Logger,
  ) {
    transport.onmessage = (message) => void this.fromClient(message as JsonRpcMessage);
    transport.onclose = () => void this.close();
    transport.onerror = (error) => this.log.debug({ server, err: error.message }, "client transport error");
  }

  onClosed(listener: () => void): void {
    this.closedListeners.add(listener);
  }

  private async fromClient(message: JsonRpcMessage): Promise<void> {
    const method = typeof message.method === "string" ? message.method : undefined;
    const id = message.id as RequestId | undefined;
    if (method === "initialize" && id !== undefined) return this.answerInitialize(id, message);
    if (method === "ping" && id !== undefined) return this.reply({ jsonrpc: "2.0", id, result: {} });
    if (method === "notifications/initialized") return;
    if (method === undefined && !this.sandbox) return; // a reply to a server request of a dead clone
    if (method === "tools/call" && id !== undefined && !(await this.argumentsAcceptable(id, message))) return;
    if (method !== undefined && id !== undefined) {
      const meta = (message.params as { _meta?: { progressToken?: string | number } } | undefined)?._meta;
      this.inFlight.set(id, meta?.progressToken);
    }
    try {
      const sandbox = await this.ensureSandbox();
      sandbox.send(message);
    } catch (error) {
      if (id !== undefined && method !== undefined) this.fail(id, error);
    }
  }

  /**
   * Rejects a call to a tool the server never listed, or with arguments its inputSchema refuses, before
   * any VM is involved. A tool missing from the template's list is still forwarded once the session has
   * a live sandbox, since a server may add tools at run time.
   */
  private async argumentsAcceptable(id: RequestId, message: JsonRpcMessage): Promise<boolean> {
    const params = (message.params ?? {}) as { name?: unknown; arguments?: unknown };
    let checker: ToolArgumentChecker;
    try {
      checker = await this.checker();
    } catch (error) {
      this.fail(id, error);
      return false;
    }
    if (typeof params.name !== "string") {
      this.replyError(id, ErrorCode.InvalidParams, "tools/call needs params.name, the tool's name (a string)");
      return false;
    }
    const verdict = checker.check(params.name, params.arguments);
    if (verdict.ok || (verdict.reason === "unknown-tool" && this.sandbox)) return true;
    if (verdict.reason === "unknown-tool") {
      this.replyError(id, ErrorCode.InvalidParams, `Unknown tool '${params.name}' on server '${this.server}'; tools/list shows the tools it has`);
    } else {
      this.replyError(id, ErrorCode.InvalidParams, `Invalid arguments for tool '${params.name}': ${verdict.message}`, {
        tool: params.name,
      });
    }
    return false;
  }

  private checker(): Promise<ToolArgumentChecker> {
    this.argumentChecker ??= this.pool.template(this.server).then((t) => ToolArgumentChecker.for(t.catalog));
    return this.argumentChecker;
  }

  private replyError(id: RequestId, code: number, message: string, data?: Record<string, unknown>): void {
    void this.reply({ jsonrpc: "2.0", id, error: { code, message, ...(data ? { data } : {}) } });
  }

  private async answerInitialize(id: RequestId, message: JsonRpcMessage): Promise<void> {
    try {
      const template = await this.pool.template(this.server);
      const requested = (message.params as { protocolVersion?: string } | undefined)?.protocolVersion;
      const protocolVersion =
        requested && SUPPORTED_PROTOCOL_VERSIONS.includes(requested) ? requested : LATEST_PROTOCOL_VERSION;
      await this.reply({ jsonrpc: "2.0", id, result: { ...template.initialize, protocolVersion } });
    } catch (error) {
      this.fail(id, error);
    }
  }

  private ensureSandbox(): Promise<Sandbox> {
    if (this.sandbox && this.sandbox.state !== "destroyed") return Promise.resolve(this.sandbox);
    this.acquiring ??= this.pool
      .acquire(this.server)
      .then((sandbox) => this.attach(sandbox))
      .finally(() => {
        this.acquiring = undefined;
      });
    return this.acquiring;
  }

  private attach(sandbox: Sandbox): Sandbox {
    if (this.closed) {
      void sandbox.destroy("session ended while the sandbox was resuming");
      throw new Error("session closed");
    }
    this.sandbox = sandbox;
    this.log.info({ server: this.server, sandbox: sandbox.id, ...sandbox.timings }, "sandbox attached to session");
    sandbox.on("message", (message) => void this.fromSandbox(message));
    sandbox.on("requestFailed", (id, error) => this.fail(id, error));
    sandbox.on("closed", (error) => {
      if (this.sandbox === sandbox) this.sandbox = undefined;
      if (error) this.log.warn({ server: this.server, sandbox: sandbox.id, err: error.message }, "sandbox lost; the next request gets a fresh one");
    });
    return sandbox;
  }

  private async fromSandbox(message: JsonRpcMessage): Promise<void> {
    const id = message.id as RequestId | undefined;
    const isResponse = id !== undefined && !("method" in message);
    if (isResponse) this.inFlight.delete(id);
    await this.reply(message, isResponse ? id : this.relatedRequest(message));
  }

  /**
   * Streamable HTTP delivers a server message on the stream of the request it belongs to. Progress is
   * matched by its token; other notifications and server->client requests go with the newest request
   * in flight (the usual case: a tool asking for sampling while it runs).
   */
  private relatedRequest(message: JsonRpcMessage): RequestId | undefined {
    const params = message.params as { progressToken?: string | number } | undefined;
    if (message.method === "notifications/progress" && params?.progressToken !== undefined) {
      for (const [id, token] of this.inFlight) if (token === params.progressToken) return id;
    }
    let newest: RequestId | undefined;
    for (const id of this.inFlight.keys()) newest = id;
    return newest;
  }

  private fail(id: RequestId, error: unknown): void {
    this.inFlight.delete(id);
    const wire: JsonRpcErrorObject = toJsonRpcError(error as SandboxError, this.server);
    void this.reply({ jsonrpc: "2.0", id, error: wire });
  }

  private async reply(message: JsonRpcMessage, relatedRequestId?: RequestId): Promise<void> {
    try {
      await this.transport.send(message as JSONRPCMessage, relatedRequestId !== undefined ? { relatedRequestId } : undefined);
    } catch (error) {
      this.log.debug({ server: this.server, err: (error as Error).message }, "could not deliver a message to the client");
    }
  }

  /** Ends the session and its sandbox. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const id of this.inFlight.keys()) {
      void this.reply({ jsonrpc: "2.0", id, error: { code: ErrorCode.ConnectionClosed, message: "session closed" } });
    }
    this.inFlight.clear();
    const sandbox = this.sandbox;
    this.sandbox = undefined;
    if (sandbox) await sandbox.destroy("client session ended");
    await this.transport.close().catch(() => undefined);
    for (const listener of this.closedListeners) listener();
  }
}
