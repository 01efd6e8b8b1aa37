import { ErrorCode, type RequestId } from "@modelcontextprotocol/sdk/types.js";
import type { Logger } from "pino";
import type { JsonRpcMessage } from "../../sandbox/agent/protocol.js";
import type { SandboxError } from "../sandbox/errors.js";
import { SessionEndedError, StateLostError } from "./errors.js";
import type { SandboxPool } from "../sandbox/pool.js";
import type { Sandbox } from "../sandbox/sandbox.js";
import type { Catalog } from "../sandbox/template.js";
import { nowMs, type RequestRecord } from "../telemetry/events.js";
import { ToolArgumentChecker, type ArgumentCheck } from "./tool-arguments.js";
import type { SandboxQuota } from "../tenancy/sandbox-quota.js";

/** Puts W3C trace context in the request's `_meta`, where MCP servers look for it. */
function withTraceparent(message: JsonRpcMessage, traceparent: string): JsonRpcMessage {
  const params = (message.params ?? {}) as Record<string, unknown>;
  const meta = (params._meta ?? {}) as Record<string, unknown>;
  return { ...message, params: { ...params, _meta: { ...meta, traceparent } } };
}

export interface LinkEvents {
  /** A message from the server: response, notification or server->client request. */
  message(message: JsonRpcMessage, guestMs?: number): void;
  /** A forwarded request that will never be answered by the server (timeout, the VM died). */
  requestFailed(id: RequestId, error: SandboxError): void;
  /** The session's sandbox was saved to disk or came back from it: what a restart could revive changed. */
  savedStateChanged?(): void;
}

/**
 * A session's connection to one hosted server: the clone it leases (resumed on the first message that
 * needs it, replaced after a failure), the template's catalog, and requests the gateway itself makes.
 */
export class ServerLink {
  private sandbox: Sandbox | undefined;
  private acquiring: Promise<Sandbox> | undefined;
  private readonly internal = new Map<RequestId, (message: JsonRpcMessage) => void>();
  private nextInternalId = 1;
  private closed = false;
  /** The session's sandbox died while idle: the next request is told its state is gone, once. */
  private lost: SandboxError | undefined;
  /** Messages sent to every new sandbox before anything else (e.g. the session's logging level). */
  private readonly preamble = new Map<string, JsonRpcMessage>();

  /** With `call` isolation: the clone of each client request in flight, by the client's request id. */
  private readonly callSandboxes = new Map<RequestId, Sandbox>();
  /** With `call` isolation: server->client requests, renamed since every clone counts ids from the same start. */
  private readonly upstreamRequests = new Map<string, { sandbox: Sandbox; id: RequestId }>();
  private nextUpstreamId = 1;
  readonly isolation: "session" | "call";

  constructor(
    readonly server: string,
    private readonly pool: SandboxPool,
    private readonly log: Logger,
    private readonly events: LinkEvents,
    /** The session tenant's hold on sandboxes: room is made before any is acquired or resumed. */
    private readonly quota: SandboxQuota,
    /** Stateless requests get `call` isolation whatever the manifest says: there is no session to keep. */
    forceCallIsolation = false,
  ) {
    this.isolation = forceCallIsolation ? "call" : (pool.manifest(server)?.isolation ?? "session");
  }

  /** The session's sandbox is running (not suspended, not gone). */
  get live(): boolean {
    return this.sandbox !== undefined && this.sandbox.state !== "destroyed" && this.sandbox.state !== "suspended";
  }

  async catalog(): Promise<Catalog> {
    return (await this.pool.template(this.server)).catalog;
  }

  async checkToolCall(name: string, args: unknown): Promise<ArgumentCheck> {
    const verdict = ToolArgumentChecker.for(await this.catalog()).check(name, args);
    // A tool missing from the template's list may have been added at run time by a live server.
    return !verdict.ok && verdict.reason === "unknown-tool" && this.live ? { ok: true, unlisted: true } : verdict;
  }

  /**
   * Forwards a message, resuming a sandbox first if the session has none. With a request's `record`,
   * the acquisition and the guest round trip are timed, and its trace context goes into `_meta`.
   */
  async send(message: JsonRpcMessage, record?: RequestRecord): Promise<void> {
    if (this.isolation === "call") return this.sendPerCall(message, record);
    if (this.lost && typeof message.method === "string" && message.id !== undefined) {
      const lost = this.lost;
      this.lost = undefined;
      throw new StateLostError(this.server, lost.message, { cause: lost });
    }
    let sandbox: Sandbox;
    if (this.sandbox?.state === "idle" || this.sandbox?.state === "active" || !record) {
      sandbox = await this.ensureSandbox();
    } else {
      const start = nowMs();
      const resuming = this.sandbox !== undefined && this.sandbox.state !== "destroyed";
      sandbox = await this.ensureSandbox();
      record.acquire = { start, end: nowMs(), source: resuming ? "suspended" : sandbox.timings.source };
    }
    this.forwardTo(sandbox, message, record);
  }

  private forwardTo(sandbox: Sandbox, message: JsonRpcMessage, record: RequestRecord | undefined): void {
    if (record) {
      record.server = this.server;
      record.guest = { sent: nowMs() };
      const traceparent = record.traceparent ?? record.incomingTraceparent;
      if (traceparent) message = withTraceparent(message, traceparent);
    }
    sandbox.send(message);
  }

  /** Forwards only if a sandbox is live (for messages that mean nothing to a fresh clone). */
  sendIfLive(message: JsonRpcMessage): void {
    if (this.isolation === "call") void this.sendPerCall(message);
    else if (this.live) this.sandbox!.send(message);
  }

  /**
   * `call` isolation: a request gets a fresh clone, destroyed once it is answered. Notifications and
   * replies go to the clone of the call they belong to (a cancellation, an answer to sampling).
   */
  private async sendPerCall(message: JsonRpcMessage, record?: RequestRecord): Promise<void> {
    const id = message.id as RequestId | undefined;
    if (typeof message.method !== "string") {
      const upstream = id !== undefined ? this.upstreamRequests.get(String(id)) : undefined;
      if (upstream) {
        this.upstreamRequests.delete(String(id));
        if (upstream.sandbox.state !== "destroyed") upstream.sandbox.send({ ...message, id: upstream.id });
      }
      return;
    }
    if (id === undefined) {
      const target = message.method === "notifications/cancelled" ? (message.params as { requestId?: RequestId } | undefined)?.requestId : undefined;
      const sandbox = target !== undefined ? this.callSandboxes.get(target) : undefined;
      if (sandbox && sandbox.state !== "destroyed") sandbox.send(message);
      return;
    }
    const start = nowMs();
    const sandbox = await this.acquireWithin();
    if (record) record.acquire = { start, end: nowMs(), source: sandbox.timings.source };
    if (this.closed) {
      void sandbox.destroy("session ended while the sandbox was resuming");
      throw new SessionEndedError();
    }
    this.callSandboxes.set(id, sandbox);
    const done = () => {
      this.callSandboxes.delete(id);
      void sandbox.destroy("call answered (isolation: call)");
    };
    sandbox.on("message", (reply, guestMs) => {
      const replyId = reply.id as RequestId | undefined;
      if (typeof replyId === "string" && replyId.startsWith("mcpvisor:preamble:")) return;
      if (replyId !== undefined && typeof reply.method === "string") {
        const ours = `${this.server}:call:${this.nextUpstreamId++}`;
        this.upstreamRequests.set(ours, { sandbox, id: replyId });
        this.events.message({ ...reply, id: ours });
        return;
      }
      this.events.message(reply, guestMs);
      if (replyId === id) done();
    });
    sandbox.on("requestFailed", (failedId, error) => {
      if (failedId !== id) return;
      this.events.requestFailed(id, error);
      done();
    });
    for (const preamble of this.preamble.values()) sandbox.send({ ...preamble, id: `mcpvisor:preamble:${this.nextInternalId++}` });
    this.forwardTo(sandbox, message, record);
  }

  /** Remembers a message to replay into every sandbox this link gets from now on, and sends it now. */
  async setPreamble(key: string, message: JsonRpcMessage): Promise<void> {
    this.preamble.set(key, message);
    if (this.live) await this.request(message.method as string, message.params as Record<string, unknown>);
  }

  /** A request made by the gateway itself; its id never reaches the client. */
  async request(method: string, params?: Record<string, unknown>): Promise<Record<string, unknown>> {
    const sandbox = await this.ensureSandbox();
    const id = `mcpvisor:link:${this.nextInternalId++}`;
    const reply = new Promise<JsonRpcMessage>((resolve) => this.internal.set(id, resolve));
    const failed = new Promise<never>((_, reject) => {
      const off = sandbox.on("requestFailed", (failedId, error) => {
        if (failedId === id) {
          off();
          reject(error);
        }
      });
    });
    sandbox.send({ jsonrpc: "2.0", id, method, ...(params ? { params } : {}) });
    const message = await Promise.race([reply, failed]).finally(() => this.internal.delete(id));
    if (message.error) {
      const error = message.error as { code?: number; message?: string };
      throw Object.assign(new Error(error.message ?? "error"), { rpcCode: error.code ?? ErrorCode.InternalError });
    }
    return (message.result ?? {}) as Record<string, unknown>;
  }

  /** The session's sandbox, running: resumed from disk if it was suspended, acquired if there is none. */
  private async ensureSandbox(): Promise<Sandbox> {
    const existing = this.sandbox;
    if (existing && existing.state !== "destroyed") {
      if (existing.state === "suspended") {
        const reserved = await this.quota.reserve();
        // throws if it could not be brought back; the next request starts afresh
        await existing.ensureRunning().finally(() => reserved(existing));
      } else {
        await existing.ensureRunning();
      }
      return existing;
    }
    this.acquiring ??= this.acquireWithin()
      .then((sandbox) => this.attach(sandbox))
      .finally(() => {
        this.acquiring = undefined;
      });
    return await this.acquiring;
  }

  /** A fresh clone, counted against the tenant's sandboxes for as long as it lives. */
  private async acquireWithin(): Promise<Sandbox> {
    const reserved = await this.quota.reserve();
    try {
      const sandbox = await this.pool.acquire(this.server);
      reserved(sandbox);
      return sandbox;
    } finally {
      reserved();
    }
  }

  private async attach(sandbox: Sandbox): Promise<Sandbox> {
    if (this.closed) {
      void sandbox.destroy("session ended while the sandbox was resuming");
      throw new SessionEndedError();
    }
    this.listen(sandbox);
    this.events.savedStateChanged?.();
    this.log.info({ sandbox: sandbox.id, ...sandbox.timings }, "sandbox attached to session");
    for (const message of this.preamble.values()) {
      await this.request(message.method as string, message.params as Record<string, unknown>).catch(() => undefined);
    }
    return sandbox;
  }

  /** Takes a sandbox saved before a gateway restart as this session's own; it resumes on first use. */
  adopt(sandbox: Sandbox): void {
    this.listen(sandbox);
  }

  /** Saves the session's sandbox to disk now if it runs and is idle (a shutdown: it comes back after). */
  async suspendIfIdle(): Promise<void> {
    if (this.sandbox?.state === "idle") await this.sandbox.suspend();
  }

  /** The session's sandbox while it is saved on disk: what a restarted gateway needs to find it. */
  get suspendedSandbox(): { sandboxId: string } | undefined {
    return this.sandbox?.state === "suspended" ? { sandboxId: this.sandbox.id } : undefined;
  }

  private listen(sandbox: Sandbox): void {
    this.sandbox = sandbox;
    sandbox.on("suspended", () => this.events.savedStateChanged?.());
    sandbox.on("resumed", () => this.events.savedStateChanged?.());
    sandbox.on("message", (message, guestMs) => {
      const waiter = message.id !== undefined && !("method" in message) ? this.internal.get(message.id as RequestId) : undefined;
      if (waiter) waiter(message);
      else this.events.message(message, guestMs);
    });
    sandbox.on("requestFailed", (id, error) => {
      if (!this.internal.has(id)) this.events.requestFailed(id, error);
    });
    sandbox.on("closed", (error, whileIdle) => {
      if (this.sandbox === sandbox) {
        this.sandbox = undefined;
        if (whileIdle) this.lost = error;
      }
      if (error) this.log.warn({ sandbox: sandbox.id, err: error.message }, "sandbox lost; the next request gets a fresh one");
    });
  }

  /**
   * Ends the link. With `keepSaved`, a suspended sandbox stays on disk for the session to come back to;
   * otherwise every sandbox of the session is destroyed with what it saved.
   */
  async close(keepSaved = false): Promise<void> {
    this.closed = true;
    const sandboxes = [this.sandbox, ...this.callSandboxes.values()].filter((s): s is Sandbox => s !== undefined);
    this.sandbox = undefined;
    this.callSandboxes.clear();
    await Promise.allSettled(sandboxes.map((s) => (keepSaved ? s.release("gateway let go of the session") : s.destroy("client session ended"))));
  }
}
