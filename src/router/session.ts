import { randomUUID } from "node:crypto";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { ErrorCode, LATEST_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS } from "@modelcontextprotocol/sdk/types.js";
import type { Logger } from "pino";
import type { Principal } from "../auth/principal.js";
import { errorResponse, toWire } from "../gateway/to-wire.js";
import type { LeaseOwner } from "../sandbox/admission.js";
import { SandboxError } from "../sandbox/errors.js";
import type { SandboxPool } from "../sandbox/pool.js";
import type { SavedRef } from "../sandbox/suspend-store.js";
import { nowMs, type RequestRecord } from "../telemetry/events.js";
import { requestTraceparent } from "../telemetry/trace-context.js";
import { InvalidParamsError, MethodNotFoundError, MissingClientCapabilityError, RequestAbandonedError, SessionEndedError, UnknownToolError, WireError } from "./errors.js";
import { isObject, isRequest, isResponse, nameParam, type JSONRPCMessage, type JSONRPCRequest, type JSONRPCResponse, type RequestId } from "./messages.js";
import { honoredFilter, META, MODERN_PROTOCOL_VERSIONS, REMOVED_METHODS } from "./modern-protocol.js";
import { INPUT_METHODS } from "./input-requests.js";
import { ModernTransport } from "./modern-transport.js";
import { TASKS_EXTENSION, taskPolicyOf, type TaskPolicy } from "./tasks.js";
import { isListMethod, LISTS, type Item, type ListMethod } from "./catalog.js";
import { RequestLedger } from "./request-ledger.js";
import { rankTools, SEARCH_TOOLS } from "./tool-search.js";
import type { ServerLink } from "./server-link.js";
import { SessionPersistence } from "./session-persistence.js";
import type { SessionRecords } from "./session-records.js";
import { storedSandboxOf, type StoredSession } from "./session-store.js";

/** Whose session it is: the principal it was opened by, and what its tenant may run. */
export interface SessionOwner {
  principal: Principal;
  lease: LeaseOwner;
}

/** Server->client requests a client must have declared it can answer, by the capability that says so. */
const CLIENT_CAPABILITY_FOR: Record<string, string> = { "sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots" };

/**
 * What every client session shares, whatever it is routed to: the transport, the order messages are
 * handled in, the client's requests in flight (so none is left unanswered), and replies. Subclasses
 * route: one server (ServerSession) or every server under namespaced names (AggregateSession).
 */
export abstract class Session {
  protected readonly ledger = new RequestLedger();
  /** Unique in this gateway: the transport's session id when it has one. */
  readonly key: string;
  private readonly closedListeners = new Set<() => void>();
  private queue: Promise<void> = Promise.resolve();
  /** What the client declared at initialize; the server in the clone was told it may use everything. */
  private clientCapabilities: Record<string, unknown> = {};
  private protocolVersion = LATEST_PROTOCOL_VERSION;
  private closed = false;
  /** Tool search mode for the whole session (a 2025 client chose it with `?tools=search`). */
  toolSearch = false;
  private persistence: SessionPersistence | undefined;

  constructor(
    protected readonly transport: Transport,
    protected readonly pool: SandboxPool,
    protected readonly log: Logger,
    protected readonly transportKind: string,
    protected readonly owner: SessionOwner,
  ) {
    this.key = transport.sessionId ?? randomUUID();
    // One message at a time: a request must not overtake one sent before it (e.g. its own cancellation).
    transport.onmessage = (message, extra) => {
      const traceparent = extra?.requestInfo?.headers.traceparent;
      this.queue = this.queue.then(() => this.receive(message, typeof traceparent === "string" ? traceparent : undefined)).catch((err: Error) => {
        this.log.error({ err }, "error while handling a client message");
      });
    };
    transport.onclose = () => void this.close();
    if (transport instanceof ModernTransport) {
      transport.onabandoned = (id, why) => this.fail(id, new RequestAbandonedError(why), this.serverFor(id));
      transport.toolFacts = (request) => this.toolFacts(request);
    }
    transport.onerror = (error) => this.log.debug({ err: error.message }, "client transport error");
  }

  /** The id its client names it by (Mcp-Session-Id), for sessions that have one. */
  get id(): string | undefined {
    return this.transport.sessionId;
  }

  onClosed(listener: () => void): void {
    if (this.closed) listener();
    else this.closedListeners.add(listener);
  }

  /** Routes one client message; initialize, ping and bookkeeping are handled before. */
  protected abstract dispatch(message: JSONRPCMessage, record: RequestRecord | undefined): Promise<void>;
  protected abstract initializeResult(): Promise<Record<string, unknown>>;
  protected abstract links(): ServerLink[];
  protected abstract linkFor(server: string): ServerLink | undefined;
  /** Every tool the tenant may see here, as tools/list would show it in the normal mode. */
  protected abstract visibleTools(): Promise<Item[]>;
  /** The hosted server and tool (its name there) a tools/call names, if any. */
  protected abstract toolCalled(request: JSONRPCRequest): { server: string; name: string } | undefined;
  /** The link to the server that has resource `uri`. */
  protected abstract linkOwning(uri: string): Promise<ServerLink | undefined>;
  /** Which server a failure is reported for. */
  protected abstract serverFor(id: RequestId): string;

  private async receive(message: JSONRPCMessage, headerTraceparent: string | undefined): Promise<void> {
    if (isRequest(message)) {
      const meta = message.params?._meta;
      const incoming = headerTraceparent ?? (typeof meta?.traceparent === "string" ? meta.traceparent : undefined);
      const record: RequestRecord = {
        transport: this.transportKind,
        tenant: this.owner.principal.tenant,
        subject: this.owner.principal.subject,
        sessionId: this.transport.sessionId,
        requestId: message.id,
        method: message.method,
        startedAt: nowMs(),
        traceparent: requestTraceparent(incoming),
        ...(incoming ? { incomingTraceparent: incoming } : {}),
      };
      this.ledger.open(message.id, record, meta?.progressToken);
      if (this.transport instanceof ModernTransport) {
        if (message.method === "server/discover") return this.answerDiscover(message);
        if (message.method === "subscriptions/listen") return this.answerListen(message, this.transport);
        if (REMOVED_METHODS.has(message.method)) {
          return this.fail(message.id, new MethodNotFoundError(`Method '${message.method}' does not exist in MCP ${MODERN_PROTOCOL_VERSIONS.join(", ")}`), this.serverFor(message.id));
        }
      } else {
        if (message.method === "initialize") return this.answerInitialize(message);
        if (message.method === "ping") return this.replyResult(message.id, {});
      }
      try {
        const routed = this.searchesTools(message.id) ? await this.throughSearch(message) : message;
        if (routed) await this.dispatch(routed, record);
      } catch (error) {
        this.fail(message.id, error, this.serverFor(message.id));
      }
      return;
    }
    if ("method" in message && message.method === "notifications/initialized") return;
    await this.dispatch(message, undefined).catch((err: Error) => this.log.debug({ err: err.message }, "could not forward a client message"));
  }

  private async answerInitialize(message: JSONRPCRequest): Promise<void> {
    try {
      const params = message.params ?? {};
      this.clientCapabilities = isObject(params.capabilities) ? params.capabilities : {};
      const requested = params.protocolVersion;
      this.protocolVersion = typeof requested === "string" && SUPPORTED_PROTOCOL_VERSIONS.includes(requested) ? requested : LATEST_PROTOCOL_VERSION;
      await this.persistence?.opened();
      this.replyResult(message.id, { ...(await this.initializeResult()), protocolVersion: this.protocolVersion });
    } catch (error) {
      this.fail(message.id, error, this.serverFor(message.id));
    }
  }

  /** Whether request `id` is served in tool search mode: the session's choice, or a 2026 request's own. */
  private searchesTools(id: RequestId): boolean {
    return this.transport instanceof ModernTransport ? this.transport.requestOf(id)?.toolSearch === true : this.toolSearch;
  }

  /**
   * Tool search mode (src/router/tool-search.ts): tools/list is the two search tools, `search_tools` is
   * answered here, and `call_tool` becomes the tools/call it names (with every check a direct call has).
   * Undefined when answered here; other methods go on unchanged.
   */
  private async throughSearch(message: JSONRPCRequest): Promise<JSONRPCRequest | undefined> {
    if (message.method === "tools/list") return void this.replyResult(message.id, { tools: SEARCH_TOOLS });
    if (message.method !== "tools/call") return message;
    const args = isObject(message.params?.arguments) ? message.params.arguments : {};
    const name = nameParam(message);
    if (name === "search_tools") {
      if (typeof args.query !== "string") throw new InvalidParamsError("search_tools needs 'query', a string");
      const limit = typeof args.limit === "number" && args.limit >= 1 ? Math.min(Math.floor(args.limit), 20) : 5;
      const found = rankTools(await this.visibleTools(), args.query, limit).map(({ name, title, description, inputSchema, annotations }) => ({
        name,
        ...(title ? { title } : {}),
        description,
        inputSchema,
        ...(annotations ? { annotations } : {}),
      }));
      return void this.replyResult(message.id, { content: [{ type: "text", text: JSON.stringify(found) }], structuredContent: { tools: found } });
    }
    if (name === "call_tool") {
      if (typeof args.name !== "string") throw new InvalidParamsError("call_tool needs 'name', the tool's name as search_tools returned it");
      return { ...message, params: { ...message.params, name: args.name, arguments: isObject(args.arguments) ? args.arguments : {} } };
    }
    throw new UnknownToolError(`Unknown tool '${String(name)}': in tool search mode the tools are search_tools and call_tool`);
  }

  /** A 2026-07-28 client's `server/discover`: what initialize told a 2025 client, in the new shape. */
  private async answerDiscover(message: JSONRPCRequest): Promise<void> {
    try {
      const { capabilities, serverInfo, instructions } = await this.initializeResult();
      // When a call here may become a task (SEP-2663), the extension is advertised.
      const tasks = (await Promise.all(this.links().map((link) => this.mayRunTasks(link)))).some(Boolean);
      this.replyResult(message.id, {
        supportedVersions: [...MODERN_PROTOCOL_VERSIONS],
        capabilities: tasks && isObject(capabilities) ? { ...capabilities, extensions: { ...(isObject(capabilities.extensions) ? capabilities.extensions : {}), [TASKS_EXTENSION]: {} } } : capabilities,
        ...(typeof instructions === "string" ? { instructions } : {}),
        _meta: { [META.serverInfo]: serverInfo },
      });
    } catch (error) {
      this.fail(message.id, error, this.serverFor(message.id));
    }
  }

  /**
   * A tools/call's tool as its server listed it: whether, and when, the call becomes a task (its tool's
   * declaration, or its server's threshold), and its inputSchema.
   */
  private async toolFacts(request: JSONRPCRequest): Promise<{ policy: TaskPolicy; inputSchema: unknown }> {
    const called = this.toolCalled(request);
    const link = called && this.linkFor(called.server);
    if (!link) return { policy: { kind: "never" }, inputSchema: undefined };
    const tool = (await link.catalog().catch(() => undefined))?.tools.find((t) => t.name === called!.name);
    const execution = isObject(tool?.execution) ? tool.execution : {};
    return { policy: taskPolicyOf(execution.taskSupport, this.pool.manifest(link.server)?.timeouts.taskAfterMs ?? 0), inputSchema: tool?.inputSchema };
  }

  private async mayRunTasks(link: ServerLink): Promise<boolean> {
    if ((this.pool.manifest(link.server)?.timeouts.taskAfterMs ?? 0) > 0) return true;
    const tools = (await link.catalog().catch(() => undefined))?.tools ?? [];
    return tools.some((t) => isObject(t.execution) && (t.execution.taskSupport === "optional" || t.execution.taskSupport === "required"));
  }

  /**
   * A 2026-07-28 `subscriptions/listen`: a stream, not a call, so it leaves the ledger at once (a server's
   * question must never be taken for one about it). Resources it names are subscribed to in the server
   * that has them, for every sandbox the session gets from now on.
   */
  private async answerListen(message: JSONRPCRequest, transport: ModernTransport): Promise<void> {
    try {
      const { capabilities } = await this.initializeResult();
      const filter = honoredFilter(message.params?.notifications, isObject(capabilities) ? capabilities : {});
      for (const uri of filter.resourceSubscriptions ?? []) {
        const subscribe: JSONRPCRequest = { jsonrpc: "2.0", id: `subscribe ${uri}`, method: "resources/subscribe", params: { uri } };
        await (await this.linkOwning(uri))?.setPreamble(`resources/subscribe ${uri}`, subscribe);
      }
      this.ledger.finish(message.id, "ok");
      transport.listen(message.id, filter);
    } catch (error) {
      this.fail(message.id, error, this.serverFor(message.id));
    }
  }

  /**
   * The template's server was initialized with roots, sampling and elicitation, so it may ask a client
   * that declared none of them; such a request is refused (the reply goes back to the server) instead
   * of waiting forever. A 2026-07-28 client declares its capabilities per request: the request the
   * server works on fails with MissingRequiredClientCapability, as the spec has it; one that declared it
   * is asked in an input_required round (ModernTransport), if its method may be answered that way.
   */
  protected refusedByClient(message: JSONRPCMessage): JSONRPCMessage | undefined {
    if (!isRequest(message)) return undefined;
    const capability = CLIENT_CAPABILITY_FOR[message.method];
    if (!capability) return undefined;
    if (this.transport instanceof ModernTransport) {
      const related = this.ledger.relatedRequest(message);
      const request = related === undefined ? undefined : this.transport.requestOf(related);
      let why = `'${message.method}' can be asked of a ${MODERN_PROTOCOL_VERSIONS[0]} client only while it waits for ${[...INPUT_METHODS].join(", ")}`;
      if (request && !request.meta.capabilities[capability]) {
        this.fail(related!, new MissingClientCapabilityError(capability), this.serverFor(related!));
        why = `The client did not declare the '${capability}' capability`;
      } else if (request && INPUT_METHODS.has(request.method)) {
        return undefined;
      }
      return errorResponse(message.id, toWire(new MethodNotFoundError(why)).error);
    }
    if (this.clientCapabilities[capability]) return undefined;
    return errorResponse(message.id, toWire(new MethodNotFoundError(`The client did not declare the '${capability}' capability`)).error);
  }

  /** The items of a list the tenant may see (its access rules, docs/design/tool-governance.md). */
  protected visibleItems(method: ListMethod, server: string, items: Item[]): Item[] {
    const rules = this.owner.principal.rules?.();
    if (!rules) return items;
    switch (method) {
      case "tools/list":
        return items.filter((item) => rules.tool(server, item));
      case "prompts/list":
        return items.filter((item) => rules.prompt(server, String(item.name)));
      case "resources/list":
        return items.filter((item) => rules.resource(server, String(item.uri)));
      case "resources/templates/list":
        return items.filter((item) => rules.resource(server, String(item.uriTemplate)));
    }
  }

  /** Whether the tenant may get prompt `name` or read resource `uri` of `server`. */
  protected permits(kind: "prompt" | "resource", server: string, name: string): boolean {
    const rules = this.owner.principal.rules?.();
    return !rules || (kind === "prompt" ? rules.prompt(server, name) : rules.resource(server, name));
  }

  /** A list a server answered, with what the tenant may not see taken out. */
  private visibleAnswer(message: JSONRPCResponse): JSONRPCResponse {
    const method = message.id === undefined ? undefined : this.ledger.record(message.id)?.method;
    if (!("result" in message) || !method || !isListMethod(method)) return message;
    const { key } = LISTS[method];
    const items = message.result[key];
    if (!Array.isArray(items)) return message;
    return { ...message, result: { ...message.result, [key]: this.visibleItems(method, this.serverFor(message.id!), items.filter(isObject)) } };
  }

  /**
   * Delivers a server message; a response ends its request's bookkeeping, after it is on its way to
   * the client (telemetry is not on the answer's path).
   */
  protected async deliver(incoming: JSONRPCMessage, guestMs?: number): Promise<void> {
    if (!isResponse(incoming)) return this.reply(incoming, this.ledger.relatedRequest(incoming));
    const message = this.visibleAnswer(incoming);
    const sent = this.reply(message, message.id);
    this.ledger.finishWith(message, guestMs);
    await sent;
  }

  /** Answers a request with an error, once: a request no longer in flight was already answered. */
  protected fail(id: RequestId, error: unknown, server: string): void {
    const wire = toWire(error, server).error;
    const errorType =
      error instanceof SandboxError ? error.code
      : error instanceof WireError ? String(error.data?.reason ?? `rpc_${error.rpcCode}`)
      : error instanceof Error ? error.name
      : "unknown";
    if (!this.ledger.finish(id, wire.code === ErrorCode.RequestTimeout ? "timeout" : "error", errorType)) return;
    void this.reply(errorResponse(id, wire));
  }

  protected replyResult(id: RequestId, result: Record<string, unknown>): void {
    void this.reply({ jsonrpc: "2.0", id, result });
    this.ledger.finish(id, "ok");
  }

  private async reply(message: JSONRPCMessage, relatedRequestId?: RequestId): Promise<void> {
    try {
      await this.transport.send(message, relatedRequestId !== undefined ? { relatedRequestId } : undefined);
    } catch (error) {
      this.log.debug({ err: (error as Error).message }, "could not deliver a message to the client");
    }
  }

  /**
   * Checks a tools/call before any VM is involved: throws when the tool does not exist or its arguments
   * fail the tool's inputSchema. `shown` is the name as the client wrote it.
   */
  protected async checkToolCall(link: ServerLink, tool: string, shown: string, args: unknown, record: RequestRecord | undefined): Promise<void> {
    const rules = this.owner.principal.rules?.();
    if (rules) {
      const listed = (await link.catalog()).tools.find((t) => t.name === tool);
      if (!rules.tool(link.server, listed ?? { name: tool })) {
        // The same answer as for a tool that does not exist; only the audit line says it was denied.
        if (record) Object.assign(record, { server: link.server, denied: true, ...(listed ? { tool } : {}) } satisfies Partial<RequestRecord>);
        throw unknownTool(shown, link.server);
      }
    }
    const verdict = await link.checkToolCall(tool, args);
    if (verdict.ok) {
      if (record && !verdict.unlisted) record.tool = tool; // only listed tools become metric labels
      return;
    }
    if (verdict.reason === "unknown-tool") throw unknownTool(shown, link.server);
    if (record) Object.assign(record, { server: link.server, tool });
    throw new InvalidParamsError(`Invalid arguments for tool '${shown}': ${verdict.message}`, { tool: shown });
  }

  /** Lets this session be saved while its sandboxes are suspended, to outlive a gateway restart. */
  enablePersistence(store: SessionRecords, route: string, revived: boolean): void {
    this.persistence = new SessionPersistence(store, route, this.owner.principal.tenant, () => this.transport.sessionId, this.log, () => void this.close(), revived);
  }

  /** Brings back a sandbox this session had before a gateway restart; false if it cannot come back. */
  async adopt(server: string, ref: SavedRef): Promise<boolean> {
    return (await this.linkFor(server)?.adopt(ref)) ?? false;
  }

  /** Called when a sandbox of the session was saved to disk or came back from it. */
  protected savedStateChanged(): void {
    const persistence = this.persistence;
    if (!persistence || this.closed) return;
    persistence.saveSoon((id) => {
      const links = this.links();
      const saved = links.flatMap((link) => (link.savedRef ? [[link.server, storedSandboxOf(link.server, link.savedRef)] as const] : []));
      if (links.some((link) => link.live) || saved.length === 0) return undefined;
      return {
        id,
        tenant: this.owner.principal.tenant,
        route: persistence.route,
        transport: this.transportKind,
        protocolVersion: this.protocolVersion,
        clientCapabilities: this.clientCapabilities,
        sandboxes: Object.fromEntries(saved),
        savedAt: new Date().toISOString(),
      } satisfies StoredSession;
    });
  }

  /**
   * Before a shutdown: a session its client can come back to has its idle sandboxes saved to disk, so
   * a restart loses nothing of it. Sessions that cannot be saved are left as they are.
   */
  async suspendForShutdown(): Promise<void> {
    if (!this.savable) return;
    await Promise.allSettled(this.links().map((link) => link.suspendIfIdle()));
    await this.persistence!.settled();
  }

  /** Whether this session can be saved for later and still runs a sandbox now (one busy with a request, say). */
  get unsaved(): boolean {
    return this.savable && this.links().some((link) => link.live);
  }

  private get savable(): boolean {
    return this.persistence !== undefined && this.transport.sessionId !== undefined && !this.closed;
  }

  /** Records that the session runs here (a session opened without initialize: a 2026-07-28 principal's). */
  async opened(): Promise<void> {
    await this.persistence?.opened();
  }

  /**
   * This node lost its cluster lease: the session ends here at once without a save (it would be
   * refused); its sandboxes are destroyed. Its record is another node's to judge.
   */
  drop(): Promise<void> {
    this.persistence?.disown();
    return this.shutDown(false);
  }

  /** The client ended the session (DELETE): everything it had goes, on disk too. */
  end(): Promise<void> {
    return this.shutDown(false);
  }

  /**
   * This process stops serving the session (a dropped connection, an idle session, a shutdown): what is
   * suspended stays on disk when its client can come back (the session can be saved). Idempotent.
   */
  close(): Promise<void> {
    return this.shutDown(this.persistence !== undefined && this.transport.sessionId !== undefined);
  }

  /**
   * One shutdown, however many callers: the gateway's close must wait for a shutdown its transport's
   * close already started, or the pool ends the session's suspended sandbox (and what it saved) first.
   */
  private shuttingDown: Promise<void> | undefined;

  private shutDown(keepSaved: boolean): Promise<void> {
    this.shuttingDown ??= this.runShutDown(keepSaved);
    return this.shuttingDown;
  }

  private async runShutDown(keepSaved: boolean): Promise<void> {
    this.closed = true;
    for (const id of this.ledger.ids()) this.fail(id, new SessionEndedError("The session closed before this request was answered"), this.serverFor(id));
    await this.persistence?.settled();
    const keep = keepSaved && this.links().some((link) => link.savedRef);
    await Promise.allSettled(this.links().map((link) => link.close({ keep })));
    if (!keep) await this.persistence?.forget();
    await this.transport.close().catch(() => undefined);
    for (const listener of this.closedListeners) listener();
  }
}

/** A tool that does not exist, or that the tenant may not see: the two must read alike. */
function unknownTool(shown: string, server: string): UnknownToolError {
  return new UnknownToolError(`Unknown tool '${shown}' on server '${server}'; tools/list shows the tools there are`);
}
