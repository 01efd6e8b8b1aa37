import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { Logger } from "pino";
import type { SandboxPool } from "../sandbox/pool.js";
import type { RequestRecord } from "../telemetry/events.js";
import { InvalidParamsError } from "./errors.js";
import type { Item } from "./catalog.js";
import { isObject, isRequest, nameParam, type JSONRPCMessage, type JSONRPCRequest } from "./messages.js";
import { ServerLink } from "./server-link.js";
import { Session, type SessionOwner } from "./session.js";

/**
 * A client session on one hosted server, names unchanged: what a client configured for that server
 * alone expects. Everything but initialize and ping passes through to the session's clone unchanged.
 */
export class ServerSession extends Session {
  private readonly link: ServerLink;

  constructor(
    readonly server: string,
    transport: Transport,
    pool: SandboxPool,
    log: Logger,
    transportKind: string,
    owner: SessionOwner,
    stateless = false,
  ) {
    super(transport, pool, log, transportKind, owner);
    this.link = new ServerLink(server, this.key, pool, log.child({ server }), {
      message: (message, guestMs) => {
        const refusal = this.refusedByClient(message);
        if (refusal) this.link.sendIfLive(refusal);
        else void this.deliver(message, guestMs);
      },
      requestFailed: (id, error) => this.fail(id, error, server),
      savedStateChanged: () => this.savedStateChanged(),
    }, owner.lease, stateless);
  }

  protected linkFor(server: string): ServerLink | undefined {
    return server === this.server ? this.link : undefined;
  }

  protected async visibleTools(): Promise<Item[]> {
    return this.visibleItems("tools/list", this.server, await this.link.currentList("tools/list"));
  }

  protected toolCalled(request: JSONRPCRequest): { server: string; name: string } | undefined {
    const name = nameParam(request);
    return name === undefined ? undefined : { server: this.server, name };
  }

  protected async linkOwning(): Promise<ServerLink> {
    return this.link;
  }

  protected links(): ServerLink[] {
    return [this.link];
  }

  protected serverFor(): string {
    return this.server;
  }

  protected initializeResult(): Promise<Record<string, unknown>> {
    return this.link.initializeResult();
  }

  protected async dispatch(message: JSONRPCMessage, record: RequestRecord | undefined): Promise<void> {
    if (!("method" in message) && !this.link.live) return; // a reply to a server request of a dead clone
    if (isRequest(message) && message.method === "tools/call") {
      const name = nameParam(message);
      if (name === undefined) throw new InvalidParamsError("tools/call needs params.name, the tool's name (a string)");
      await this.checkToolCall(this.link, name, name, message.params?.arguments, record);
    }
    // Prompts and resources the tenant may not see are, to it, prompts and resources that do not exist.
    if (isRequest(message) && message.method === "prompts/get" && !this.permits("prompt", this.server, String(nameParam(message)))) {
      throw new InvalidParamsError(`Unknown prompt '${String(nameParam(message))}': prompts/list shows the prompts there are`);
    }
    if (isRequest(message) && message.method === "resources/read" && !this.permits("resource", this.server, String(message.params?.uri))) {
      throw new InvalidParamsError(`Unknown resource '${String(message.params?.uri)}': resources/list shows the URIs there are`);
    }
    if (isRequest(message) && message.method === "completion/complete") {
      const ref = isObject(message.params?.ref) ? message.params.ref : {};
      const [kind, name] = ref.type === "ref/resource" ? (["resource", String(ref.uri)] as const) : (["prompt", String(ref.name)] as const);
      if (!this.permits(kind, this.server, name)) throw new InvalidParamsError(`Unknown ${kind} '${name}' in completion/complete`);
    }
    await this.link.send(message, record);
  }
}
