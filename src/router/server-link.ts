import type { Logger } from "pino";
import type { LeaseOwner } from "../sandbox/admission.js";
import type { SandboxError } from "../sandbox/errors.js";
import type { LeaseEvents, SandboxLease } from "../sandbox/lease.js";
import type { SandboxPool } from "../sandbox/pool.js";
import type { SavedRef } from "../sandbox/suspend-store.js";
import { nowMs, type RequestRecord } from "../telemetry/events.js";
import { LISTS, preparedOf, type Catalog, type Item, type ListMethod } from "./catalog.js";
import { SessionEndedError } from "./errors.js";
import { fromGuest, isObject, isRequest, isResponse, type JSONRPCMessage, type JSONRPCRequest, type RequestId } from "./messages.js";
import { ToolArgumentChecker, type ArgumentCheck } from "./tool-arguments.js";
import { UpstreamIds } from "./upstream-ids.js";

/** Puts W3C trace context in the request's `_meta`, where MCP servers look for it. */
function withTraceparent(message: JSONRPCMessage, traceparent: string): JSONRPCMessage {
  if (!("method" in message)) return message;
  const params = message.params ?? {};
  return { ...message, params: { ...params, _meta: { ...params._meta, traceparent } } };
}

export interface LinkEvents {
  /** A message from the server: response, notification or server->client request. */
  message(message: JSONRPCMessage, guestMs?: number): void;
  /** A forwarded request that will never be answered by the server (timeout, the VM died). */
  requestFailed(id: RequestId, error: SandboxError): void;
  /** The session's sandbox was saved to disk or came back from it: what a restart could revive changed. */
  savedStateChanged(): void;
}

/**
 * A session's connection to one hosted server: a lease on the session's sandbox there (or, with `call`
 * isolation, one lease per request), the template's catalog, and the messages every new sandbox must
 * see first. It never runs a sandbox itself: the lease does.
 */
export class ServerLink {
  private lease: SandboxLease | undefined;
  private closed = false;
  /** Messages sent to every new sandbox before anything else (e.g. the session's logging level). */
  private readonly preamble = new Map<string, JSONRPCRequest>();
  /** With `call` isolation: the lease of each client request in flight, by the client's request id. */
  private readonly callLeases = new Map<RequestId, SandboxLease>();
  /** With `call` isolation: server->client requests, renamed since every clone counts ids from the same start. */
  private readonly upstream: UpstreamIds<SandboxLease>;
  private nextCall = 1;
  readonly isolation: "session" | "call";

  constructor(
    readonly server: string,
    /** The session's own key, unique in this gateway. */
    private readonly sessionKey: string,
    private readonly pool: SandboxPool,
    private readonly log: Logger,
    private readonly events: LinkEvents,
    private readonly owner: LeaseOwner,
    /** Stateless requests get `call` isolation whatever the manifest says: there is no session to keep. */
    forceCallIsolation = false,
  ) {
    this.isolation = forceCallIsolation ? "call" : (pool.manifest(server)?.isolation ?? "session");
    this.upstream = new UpstreamIds(`${server}:call`);
  }

  /** The session's sandbox is running (not suspended, not gone). */
  get live(): boolean {
    return this.lease?.running ?? false;
  }

  async catalog(): Promise<Catalog> {
    return preparedOf(await this.pool.template(this.server), this.server).catalog;
  }

  /** A list as the server has it now: its live clone's (it may have changed), else the template's. */
  async currentList(method: ListMethod): Promise<Item[]> {
    const { key } = LISTS[method];
    const live = this.live ? (await this.request(method))[key] : undefined;
    return Array.isArray(live) ? live.filter(isObject) : (await this.catalog())[key];
  }

  async initializeResult(): Promise<Record<string, unknown>> {
    return preparedOf(await this.pool.template(this.server), this.server).initialize;
  }

  async checkToolCall(name: string, args: unknown): Promise<ArgumentCheck> {
    const verdict = ToolArgumentChecker.for(await this.catalog()).check(name, args);
    // A tool missing from the template's list may have been added at run time by a live server.
    return !verdict.ok && verdict.reason === "unknown-tool" && this.live ? { ok: true, unlisted: true } : verdict;
  }

  /** The session's lease, made on first use. */
  private sessionLease(): SandboxLease {
    if (this.closed) throw new SessionEndedError();
    this.lease ??= this.pool.lease({ scope: "session", server: this.server, session: this.sessionKey }, this.owner, this.leaseEvents(), {
      onFreshSandbox: () => this.replayPreamble(),
    });
    return this.lease;
  }

  private leaseEvents(): LeaseEvents {
    return {
      message: (message, guestMs) => {
        const parsed = fromGuest(message);
        if (parsed) this.events.message(parsed, guestMs);
        else this.log.warn({ server: this.server }, "dropped a message from the guest that is not JSON-RPC");
      },
      requestFailed: (id, error) => this.events.requestFailed(id, error),
      savedStateChanged: () => this.events.savedStateChanged(),
    };
  }

  /**
   * Forwards a message, resuming or acquiring a sandbox first if needed. With a request's `record`, the
   * acquisition and the guest round trip are timed, and its trace context goes into `_meta`.
   */
  async send(message: JSONRPCMessage, record?: RequestRecord): Promise<void> {
    if (this.isolation === "call") return this.sendPerCall(message, record);
    const lease = this.sessionLease();
    const acquired = await lease.ready({ reportLoss: isRequest(message) });
    if (record && acquired) record.acquire = acquired;
    this.forwardTo(lease, message, record);
  }

  private forwardTo(lease: SandboxLease, message: JSONRPCMessage, record: RequestRecord | undefined): void {
    if (record) {
      record.server = this.server;
      record.guest = { sent: nowMs() };
      if (record.traceparent) message = withTraceparent(message, record.traceparent);
    }
    lease.send(message);
  }

  /** Forwards only if a sandbox is live (for messages that mean nothing to a fresh clone). */
  sendIfLive(message: JSONRPCMessage): void {
    if (this.isolation === "call") void this.sendPerCall(message);
    else if (this.lease?.running) this.lease.send(message);
  }

  /**
   * `call` isolation: a request gets a fresh clone, released once it is answered. Notifications and
   * replies go to the clone of the call they belong to (a cancellation, an answer to sampling).
   */
  private async sendPerCall(message: JSONRPCMessage, record?: RequestRecord): Promise<void> {
    if (isResponse(message)) {
      const upstream = this.upstream.take(message.id);
      if (upstream?.source.running) upstream.source.send({ ...message, id: upstream.id });
      return;
    }
    if (!isRequest(message)) {
      const target = message.method === "notifications/cancelled" ? message.params?.requestId : undefined;
      const lease = typeof target === "string" || typeof target === "number" ? this.callLeases.get(target) : undefined;
      if (lease?.running) lease.send(message);
      return;
    }
    if (this.closed) throw new SessionEndedError();
    const id = message.id;
    const lease: SandboxLease = this.pool.lease({ scope: "call", server: this.server, call: `${this.sessionKey}:${this.nextCall++}` }, this.owner, {
      message: (raw, guestMs) => {
        const reply = fromGuest(raw);
        if (!reply) return;
        if (isRequest(reply)) return this.events.message({ ...reply, id: this.upstream.rename(lease, reply.id) });
        this.events.message(reply, guestMs);
        if (isResponse(reply) && reply.id === id) done();
      },
      requestFailed: (failedId, error) => {
        if (failedId !== id) return;
        this.events.requestFailed(id, error);
        done();
      },
      savedStateChanged: () => undefined,
    });
    const done = () => {
      this.callLeases.delete(id);
      void lease.release({ keep: false });
    };
    this.callLeases.set(id, lease);
    try {
      const acquired = await lease.ready();
      if (record && acquired) record.acquire = acquired;
      if (this.closed) throw new SessionEndedError();
      for (const preamble of this.preamble.values()) await lease.request(preamble.method, preamble.params);
      this.forwardTo(lease, message, record);
    } catch (err) {
      done();
      throw err;
    }
  }

  /** Remembers a request to replay into every sandbox this link gets from now on, and sends it now. */
  async setPreamble(key: string, message: JSONRPCRequest): Promise<void> {
    this.preamble.set(key, message);
    if (this.live) await this.lease!.request(message.method, message.params);
  }

  private async replayPreamble(): Promise<void> {
    for (const message of this.preamble.values()) {
      await this.lease!.request(message.method, message.params).catch((err: Error) =>
        this.log.warn({ method: message.method, err: err.message }, "a new sandbox refused a replayed request"),
      );
    }
  }

  /** A request made by the gateway itself; its id never reaches the client. */
  request(method: string, params?: Record<string, unknown>): Promise<Record<string, unknown>> {
    return this.sessionLease().request(method, params);
  }

  /** Takes a sandbox saved before a gateway restart as this session's own; false if it cannot come back. */
  async adopt(ref: SavedRef): Promise<boolean> {
    const lease = await this.pool.adopt({ scope: "session", server: this.server, session: this.sessionKey }, this.owner, ref, this.leaseEvents(), {
      onFreshSandbox: () => this.replayPreamble(),
    });
    if (!lease) return false;
    this.lease = lease;
    return true;
  }

  /** Saves the session's sandbox to disk now if it runs and is idle (a shutdown: it comes back after). */
  async suspendIfIdle(): Promise<void> {
    await this.lease?.suspendIfIdle();
  }

  /** The session's sandbox while it is saved on disk: what a restarted gateway needs to find it. */
  get savedRef(): SavedRef | undefined {
    return this.lease?.savedRef;
  }

  /**
   * Ends the link. With `keep`, a suspended sandbox stays on disk for the session to come back to;
   * otherwise every sandbox of the session is destroyed with what it saved.
   */
  async close({ keep }: { keep: boolean }): Promise<void> {
    this.closed = true;
    const leases = [this.lease, ...this.callLeases.values()].filter((l): l is SandboxLease => l !== undefined);
    this.lease = undefined;
    this.callLeases.clear();
    await Promise.allSettled(leases.map((l) => l.release({ keep })));
  }
}
