import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { ErrorCode, type RequestId } from "@modelcontextprotocol/sdk/types.js";
import type { Logger } from "pino";
import type { JsonRpcMessage } from "../../sandbox/agent/protocol.js";
import type { SandboxPool } from "../sandbox/pool.js";
import type { RequestRecord } from "../telemetry/events.js";
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
    this.link = new ServerLink(server, pool, log.child({ server }), {
      message: (message, guestMs) => {
        const refusal = this.refusedByClient(message);
        if (refusal) this.link.sendIfLive(refusal);
        else void this.deliver(message, guestMs);
      },
      requestFailed: (id, error) => this.fail(id, error, server),
      savedStateChanged: () => this.persistSoon(),
    }, owner.sandboxes, stateless);
  }

  protected linkFor(server: string): ServerLink | undefined {
    return server === this.server ? this.link : undefined;
  }

  protected links(): ServerLink[] {
    return [this.link];
  }

  protected serverFor(): string {
    return this.server;
  }

  protected async initializeResult(): Promise<Record<string, unknown>> {
    return (await this.pool.template(this.server)).initialize;
  }

  protected async dispatch(
    message: JsonRpcMessage,
    method: string | undefined,
    id: RequestId | undefined,
    record: RequestRecord | undefined,
  ): Promise<void> {
    if (method === undefined && !this.link.live) return; // a reply to a server request of a dead clone
    if (method === "tools/call" && id !== undefined) {
      const { name, arguments: args } = (message.params ?? {}) as { name?: unknown; arguments?: unknown };
      if (typeof name !== "string") {
        return this.replyError(id, ErrorCode.InvalidParams, "tools/call needs params.name, the tool's name (a string)");
      }
      if (!(await this.toolCallAcceptable(id, this.link, name, name, args, record))) return;
    }
    await this.link.send(message, record);
  }
}
