import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { Logger } from "pino";
import { mayUseServer } from "../auth/principal.js";
import type { SandboxPool } from "../sandbox/pool.js";
import type { RequestRecord } from "../telemetry/events.js";
import { MCPVISOR_VERSION } from "../version.js";
import { isListMethod, LISTS, preparedOf, type Item, type ListMethod } from "./catalog.js";
import { InvalidParamsError, MethodNotFoundError } from "./errors.js";
import { isObject, isRequest, isResponse, nameParam, type JSONRPCMessage, type JSONRPCNotification, type JSONRPCRequest, type JSONRPCResponse, type RequestId } from "./messages.js";
import { qualify, splitQualified } from "./names.js";
import { ServerLink } from "./server-link.js";
import { Session, type SessionOwner } from "./session.js";
import { UpstreamIds } from "./upstream-ids.js";

/**
 * Every hosted server behind one endpoint. Tools and prompts are namespaced `<server>__<name>`;
 * resources keep their URIs and are routed by which server listed them. Each server gets its own clone,
 * resumed only when the session first needs that server: listing is answered from the templates'
 * catalogs (or from a live clone, whose list may have changed).
 */
export class AggregateSession extends Session {
  private readonly serverLinks = new Map<string, ServerLink>();
  /** Server->client requests get ids of ours, since two servers may use the same id. */
  private readonly upstream = new UpstreamIds<ServerLink>("upstream");
  /** Which server each forwarded client request went to, for failures and cancellation. */
  private readonly routes = new Map<RequestId, string>();

  constructor(transport: Transport, pool: SandboxPool, log: Logger, transportKind: string, owner: SessionOwner, stateless = false) {
    super(transport, pool, log, transportKind, owner);
    // Only the servers the tenant may use exist here: the others are not listed, and not callable.
    for (const server of pool.serverNames().filter((s) => mayUseServer(owner.principal, s))) {
      const link: ServerLink = new ServerLink(server, this.key, pool, log.child({ server }), {
        message: (message, guestMs) => void this.fromServer(link, message, guestMs),
        requestFailed: (id, error) => {
          this.routes.delete(id);
          this.fail(id, error, server);
        },
        savedStateChanged: () => this.savedStateChanged(),
      }, owner.lease, stateless);
      this.serverLinks.set(server, link);
    }
  }

  protected linkFor(server: string): ServerLink | undefined {
    return this.serverLinks.get(server);
  }

  protected links(): ServerLink[] {
    return [...this.serverLinks.values()];
  }

  protected visibleTools(): Promise<Item[]> {
    return this.aggregateList("tools/list");
  }

  protected toolCalled(request: JSONRPCRequest): { server: string; name: string } | undefined {
    const name = nameParam(request);
    return name === undefined ? undefined : splitQualified(name);
  }

  protected serverFor(id: RequestId): string {
    return this.routes.get(id) ?? "mcpvisor";
  }

  protected async initializeResult(): Promise<Record<string, unknown>> {
    const capabilities = await Promise.all(
      this.links().map((l): Promise<Record<string, unknown>> => this.pool.template(l.server).then((t) => preparedOf(t, l.server).initialize.capabilities, () => ({}))),
    );
    const subscribe = capabilities.some((c) => isObject(c.resources) && c.resources.subscribe);
    return {
      capabilities: {
        tools: { listChanged: true },
        prompts: { listChanged: true },
        resources: { listChanged: true, ...(subscribe ? { subscribe: true } : {}) },
        logging: {},
        ...(capabilities.some((c) => c.completions) ? { completions: {} } : {}),
      },
      serverInfo: { name: "mcpvisor", version: MCPVISOR_VERSION },
      instructions: `Tools and prompts of ${this.serverLinks.size} sandboxed MCP servers (${[...this.serverLinks.keys()].join(", ")}), named <server>__<name>.`,
    };
  }

  protected async dispatch(message: JSONRPCMessage, record: RequestRecord | undefined): Promise<void> {
    if (isResponse(message)) return this.fromClientResponse(message);
    if (!isRequest(message)) return this.fromClientNotification(message);
    const { method, id } = message;
    if (isListMethod(method)) return this.replyResult(id, { [LISTS[method].key]: await this.aggregateList(method) });
    switch (method) {
      case "tools/call":
      case "prompts/get":
        return this.forwardNamed(message, record);
      case "resources/read":
      case "resources/subscribe":
      case "resources/unsubscribe":
        return this.forwardByUri(message, message.params?.uri, record);
      case "completion/complete":
        return this.forwardCompletion(message, record);
      case "logging/setLevel":
        await Promise.all(this.links().map((l) => l.setPreamble("logging", message)));
        return this.replyResult(id, {});
      default:
        throw new MethodNotFoundError(`Method '${method}' is not supported on the aggregated endpoint; use /servers/<name>/mcp`);
    }
  }

  private async aggregateList(method: ListMethod): Promise<Item[]> {
    const { named } = LISTS[method];
    const perServer = await Promise.all(
      this.links().map(async (link) => {
        try {
          const items = this.visibleItems(method, link.server, await link.currentList(method));
          return named ? items.map((item) => ({ ...item, name: qualify(link.server, String(item.name)) })) : items;
        } catch (err) {
          this.log.warn({ server: link.server, method, err: (err as Error).message }, "server left out of an aggregated list");
          return [];
        }
      }),
    );
    return perServer.flat();
  }

  private async forwardNamed(message: JSONRPCRequest, record?: RequestRecord): Promise<void> {
    const name = nameParam(message);
    const target = name === undefined ? undefined : splitQualified(name);
    const link = target && this.serverLinks.get(target.server);
    const hidden = message.method === "prompts/get" && target && !this.permits("prompt", target.server, target.name);
    if (!target || !link || hidden) {
      const kind = message.method === "tools/call" ? "tool" : "prompt";
      throw new InvalidParamsError(`Unknown ${kind} '${String(name)}': names here are <server>__<name>, servers: ${[...this.serverLinks.keys()].join(", ")}`);
    }
    if (message.method === "tools/call") await this.checkToolCall(link, target.name, name!, message.params?.arguments, record);
    await this.forward(link, { ...message, params: { ...message.params, name: target.name } }, record);
  }

  private async forwardByUri(message: JSONRPCRequest, uri: unknown, record?: RequestRecord): Promise<void> {
    const link = typeof uri === "string" ? await this.linkOwning(uri) : undefined;
    if (!link || !this.permits("resource", link.server, String(uri))) throw new InvalidParamsError(`Unknown resource '${String(uri)}': resources/list shows the URIs there are`);
    await this.forward(link, message, record);
  }

  private async forwardCompletion(message: JSONRPCRequest, record?: RequestRecord): Promise<void> {
    const ref = isObject(message.params?.ref) ? message.params.ref : {};
    if (ref.type === "ref/resource") return this.forwardByUri(message, ref.uri, record);
    const target = typeof ref.name === "string" ? splitQualified(ref.name) : undefined;
    const link = target && this.serverLinks.get(target.server);
    if (!target || !link || !this.permits("prompt", target.server, target.name)) throw new InvalidParamsError(`Unknown prompt '${String(ref.name)}' in completion/complete`);
    await this.forward(link, { ...message, params: { ...message.params, ref: { ...ref, name: target.name } } }, record);
  }

  private async forward(link: ServerLink, message: JSONRPCRequest, record?: RequestRecord): Promise<void> {
    this.routes.set(message.id, link.server);
    await link.send(message, record);
  }

  /** The server that listed `uri`, or whose URI template's fixed prefix it starts with. */
  protected async linkOwning(uri: string): Promise<ServerLink | undefined> {
    for (const link of this.links()) if ((await link.catalog()).resources.some((r) => r.uri === uri)) return link;
    for (const link of this.links()) {
      for (const template of (await link.catalog()).resourceTemplates) {
        const prefix = String(template.uriTemplate ?? "").split("{")[0]!;
        if (prefix && uri.startsWith(prefix)) return link;
      }
    }
    return undefined;
  }

  private fromClientNotification(message: JSONRPCNotification): void {
    if (message.method === "notifications/cancelled") {
      const requestId = message.params?.requestId;
      const server = typeof requestId === "string" || typeof requestId === "number" ? this.routes.get(requestId) : undefined;
      if (server) this.serverLinks.get(server)!.sendIfLive(message);
      return;
    }
    for (const link of this.links()) link.sendIfLive(message);
  }

  private fromClientResponse(message: JSONRPCResponse): void {
    const upstream = this.upstream.take(message.id);
    if (upstream) upstream.source.sendIfLive({ ...message, id: upstream.id });
  }

  private async fromServer(link: ServerLink, message: JSONRPCMessage, guestMs?: number): Promise<void> {
    const refusal = this.refusedByClient(message);
    if (refusal) return link.sendIfLive(refusal);
    if (isRequest(message)) return this.deliver({ ...message, id: this.upstream.rename(link, message.id) });
    if (isResponse(message) && message.id !== undefined) this.routes.delete(message.id);
    await this.deliver(message, guestMs);
  }
}
