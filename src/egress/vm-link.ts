/**
 * The gateway's end of one VM's egress port (protocol: sandbox/agent/egress-protocol.ts): finds the
 * agent's sync line, serves the HTTP/2 session after it, and decides every stream by the server's
 * policy and limits. Whatever the guest sends, the worst it gets is a refusal or a closed link.
 */
import * as http from "node:http";
import * as http2 from "node:http2";
import * as https from "node:https";
import { Duplex } from "node:stream";
import type { Logger } from "pino";
import { HTTP_PROXY_PATH, REASON_HEADER, RESOLVE_PATH, syncLine, SyncLineFinder } from "../../sandbox/agent/egress-protocol.js";
import type { EgressAttachment } from "../sandbox/driver.js";
import { events, nowMs, publishSoon, type EgressRecord } from "../telemetry/events.js";
import { connectUpstream, forwardRequest, splice, terminateGuestTls, type Allowed, type UpstreamOptions } from "./forwarding.js";
import { ByteWindow, type ConnectionBudget } from "./limits.js";
import { UNLISTED, type EgressPolicy, type Verdict } from "./policy.js";

export interface LinkContext {
  server: string;
  vm: string;
  policy: EgressPolicy;
  limits: { maxConnections: number; maxBytesPerMinute: number };
  budget: ConnectionBudget;
  upstream: UpstreamOptions;
  leafFor(name: string): Promise<{ keyPem: string; certPem: string }>;
  log: Logger;
}

/** The HTTP/2 session's byte stream over the port's socket, after the sync line. */
class PortBridge extends Duplex {
  constructor(private readonly socket: Duplex) {
    super();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.socket.destroyed) callback(new Error("egress port closed"));
    else this.socket.write(chunk, callback);
  }

  override _read(): void {
    this.socket.resume();
  }
}

type Stream = http2.ServerHttp2Stream;

/** How a tunnel answers its guest: an HTTP/2 status on the link, or an HTTP/1.1 status line (the proxy). */
interface TunnelReply {
  established(): void;
  failed(status: 403 | 502, reason: string): void;
}
type RecordFields = Omit<EgressRecord, "server" | "vm" | "endedAt" | "bytesOut" | "bytesIn"> & Partial<EgressRecord>;

export class VmEgressLink implements EgressAttachment {
  private finder = new SyncLineFinder();
  private bridge: PortBridge | undefined;
  private session: http2.ServerHttp2Session | undefined;
  private readonly h2: http2.Http2Server;
  private readonly proxy = http.createServer();
  private readonly intercept = http.createServer();
  /** Which verdict each intercepted guest socket was allowed under. */
  private readonly verdicts = new WeakMap<object, Allowed>();
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  private readonly secureAgent = new https.Agent({ keepAlive: true, maxSockets: 16 });
  private readonly bytes: ByteWindow;
  private open = 0;
  private closed = false;
  private traceparent: string | undefined;

  constructor(
    private readonly socket: Duplex,
    private readonly ctx: LinkContext,
  ) {
    this.bytes = new ByteWindow(ctx.limits.maxBytesPerMinute);
    // Streams in flight are bounded like connections (plus DNS questions), so a guest cannot make the
    // gateway resolve names or hold streams without end.
    this.h2 = http2.createServer({
      settings: { initialWindowSize: 1024 * 1024, maxConcurrentStreams: ctx.limits.maxConnections + 16 },
      maxSessionMemory: 64,
    });
    this.h2.on("session", (session) => {
      this.session = session;
      // A protocol error (e.g. the agent's next sync line arriving in this session) ends it: resync.
      session.on("error", () => this.resync(session));
      session.on("goaway", () => this.resync(session));
      session.on("close", () => this.resync(session));
    });
    this.h2.on("stream", (stream, headers) => void this.onStream(stream, headers).catch((err: Error) => this.fail(stream, 500, err.message)));
    this.proxy.on("connect", (req: http.IncomingMessage, guest: Duplex, head: Buffer) => void this.onProxyConnect(req, guest, head));
    this.proxy.on("request", (req, res) => this.onProxyRequest(req, res));
    this.intercept.on("request", (req, res) => this.onInterceptedRequest(req, res));
    for (const server of [this.proxy, this.intercept]) server.on("clientError", (_err, guest: Duplex) => guest.destroy());
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", () => this.close());
    socket.on("close", () => this.close());
  }

  openConnections(): number {
    return this.open;
  }

  noteCall(traceparent: string): void {
    this.traceparent = traceparent;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.bridge?.destroy();
    this.socket.destroy();
    this.agent.destroy();
    this.secureAgent.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.bridge) {
      if (!this.bridge.push(chunk)) this.socket.pause();
      return;
    }
    let found;
    try {
      found = this.finder.push(chunk);
    } catch (err) {
      this.ctx.log.warn({ server: this.ctx.server, vm: this.ctx.vm, err: (err as Error).message }, "egress link broken: no sync line");
      this.close();
      return;
    }
    if (!found) return;
    this.socket.write(syncLine(found.nonce));
    this.bridge = new PortBridge(this.socket);
    this.h2.emit("connection", this.bridge);
    if (found.rest.length) this.bridge.push(found.rest);
  }

  /** The session ended (the guest reset it, or broke it): wait for the agent's next sync line. */
  private resync(session: http2.ServerHttp2Session): void {
    if (session !== this.session) return;
    this.session = undefined;
    session.destroy();
    this.bridge?.destroy();
    this.bridge = undefined;
    this.finder = new SyncLineFinder();
    if (!this.closed) this.socket.resume();
  }

  private record(partial: RecordFields): void {
    const record: EgressRecord = { server: this.ctx.server, vm: this.ctx.vm, endedAt: nowMs(), bytesOut: 0, bytesIn: 0, ...partial };
    if (this.traceparent && !record.traceparent) record.traceparent = this.traceparent;
    if (record.outcome === "refused" || record.outcome === "tls_failed") {
      this.ctx.log.warn({ server: record.server, vm: record.vm, kind: record.kind, target: record.target, outcome: record.outcome, reason: record.reason }, `egress ${record.outcome === "refused" ? "refused" : "upstream certificate check failed"}: ${record.target}`);
    } else if (record.outcome === "failed") {
      this.ctx.log.info({ server: record.server, vm: record.vm, target: record.target, reason: record.reason }, `egress connection failed: ${record.target}`);
    }
    publishSoon(events.egress, record);
  }

  private fail(stream: Stream, status: number, reason: string): void {
    if (stream.destroyed || stream.closed) return;
    if (stream.headersSent) stream.close(http2.constants.NGHTTP2_CONNECT_ERROR);
    else stream.respond({ ":status": status, [REASON_HEADER]: encodeURIComponent(reason) }, { endStream: true });
  }

  private async onStream(stream: Stream, headers: http2.IncomingHttpHeaders): Promise<void> {
    stream.on("error", () => undefined);
    const method = headers[":method"];
    const path = headers[":path"] ?? "";
    if (method === "GET" && path.startsWith(`${RESOLVE_PATH}?`)) return this.resolve(stream, new URLSearchParams(path.slice(RESOLVE_PATH.length + 1)).get("name") ?? "");
    if (method === "CONNECT") return this.tunnel(stream, headers[":authority"] ?? "");
    if (method === "POST" && path === HTTP_PROXY_PATH) return this.proxyClient(stream);
    this.fail(stream, 404, "unknown egress request");
  }

  private async resolve(stream: Stream, name: string): Promise<void> {
    const startedAt = nowMs();
    const answer = await this.ctx.policy.answerName(name.slice(0, 255));
    if (!answer.ok) {
      this.record({ kind: "dns", destination: answer.label, target: name.slice(0, 255), outcome: "refused", reason: answer.reason, startedAt });
      return this.fail(stream, 403, answer.reason);
    }
    if (!stream.destroyed) {
      stream.respond({ ":status": 200, "content-type": "application/json" });
      stream.end(JSON.stringify({ address: answer.address }));
    }
  }

  /**
   * Takes a connection slot for `guest` until it closes, or says why not (the limits); the caller
   * answers a refusal.
   */
  private hold(guest: Duplex): string | undefined {
    if (this.closed) return "the sandbox is going away";
    if (this.open >= this.ctx.limits.maxConnections) return `the sandbox has ${this.open} connections open (network.limits.maxConnections)`;
    if (this.bytes.exceeded()) return `the sandbox moved ${this.ctx.limits.maxBytesPerMinute} bytes this minute (network.limits.maxBytesPerMinute)`;
    if (!this.ctx.budget.tryTake()) return `the gateway has ${this.ctx.budget.max} egress connections open (egressMaxConnections)`;
    this.open++;
    guest.once("close", () => {
      this.open--;
      this.ctx.budget.release();
    });
    return undefined;
  }

  private async tunnel(stream: Stream, authority: string): Promise<void> {
    const target = parseAuthority(authority);
    if (!target) return this.fail(stream, 400, `bad CONNECT authority '${authority.slice(0, 100)}'`);
    const refusal = this.hold(stream);
    if (refusal) {
      this.record({ kind: "tunnel", destination: UNLISTED, target: `${target.host}:${target.port}`, outcome: "refused", reason: refusal, startedAt: nowMs() });
      return this.fail(stream, 403, refusal);
    }
    await this.establish(stream, target, authority, "tunnel", {
      established: () => stream.respond({ ":status": 200 }),
      failed: (status, reason) => this.fail(stream, status, reason),
    });
  }

  /**
   * A connection to `target` for `guest`, decided by the policy: refused, intercepted (a credential),
   * or carried to the checked address. `reply` answers the guest in its own protocol.
   */
  private async establish(guest: Duplex, target: { host: string; port: number } | undefined, asked: string, kind: EgressRecord["kind"], reply: TunnelReply): Promise<void> {
    const startedAt = nowMs();
    const label = target ? `${target.host}:${target.port}` : asked.slice(0, 100);
    const verdict: Verdict = target ? await this.ctx.policy.decide(target.host, target.port) : { allowed: false, label: UNLISTED, reason: `bad CONNECT target '${label}'` };
    if (!verdict.allowed) {
      this.record({ kind, destination: verdict.label, target: label, outcome: "refused", reason: verdict.reason, startedAt });
      return reply.failed(403, verdict.reason);
    }
    if (verdict.credential) {
      reply.established();
      return this.interceptGuest(guest, verdict, label);
    }
    let upstream;
    try {
      upstream = await connectUpstream(verdict);
    } catch (err) {
      this.record({ kind, destination: verdict.label, target: label, outcome: "failed", reason: (err as Error).message, startedAt });
      return reply.failed(502, `${label}: ${(err as Error).message}`);
    }
    if (guest.destroyed) return void upstream.destroy();
    reply.established();
    this.carry(guest, upstream, verdict, label, kind, startedAt);
  }

  private carry(guest: Duplex, upstream: Duplex, verdict: Allowed, label: string, kind: EgressRecord["kind"], startedAt: number): void {
    const traceparent = this.traceparent;
    let bytesOut = 0;
    let bytesIn = 0;
    splice(
      guest,
      upstream,
      (out, inn) => {
        bytesOut += out;
        bytesIn += inn;
        this.bytes.add(out + inn);
      },
      (error) => {
        const record: RecordFields = { kind, destination: verdict.label, target: label, outcome: "ok", startedAt, bytesOut, bytesIn };
        if (traceparent) record.traceparent = traceparent;
        if (error && bytesIn === 0 && bytesOut === 0) Object.assign(record, { outcome: "failed", reason: error.message });
        this.record(record);
      },
    );
  }

  /** A destination with a credential: HTTP through the gateway, the header added to each request. */
  private async interceptGuest(guest: Duplex, verdict: Allowed, label: string): Promise<void> {
    try {
      const { socket, secure } = await terminateGuestTls(guest, verdict, (name) => this.ctx.leafFor(name));
      this.verdicts.set(socket, verdict);
      (socket as Duplex & { secure?: boolean }).secure = secure;
      socket.on("error", () => guest.destroy());
      this.intercept.emit("connection", socket);
    } catch (err) {
      this.record({ kind: "intercepted", destination: verdict.label, target: label, outcome: "failed", reason: (err as Error).message, startedAt: nowMs() });
      guest.destroy();
    }
  }

  private onInterceptedRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const socket = req.socket as unknown as Duplex & { secure?: boolean };
    const verdict = this.verdicts.get(socket);
    if (!verdict) return void res.writeHead(500).end();
    this.forward(req, res, verdict, socket.secure === true, req.url ?? "/", "intercepted");
  }

  private forward(req: http.IncomingMessage, res: http.ServerResponse, verdict: Allowed, secure: boolean, path: string, kind: EgressRecord["kind"]): void {
    const startedAt = nowMs();
    const traceparent = this.traceparent;
    const target = `${verdict.host}:${verdict.port}`;
    forwardRequest(req, res, verdict, secure, path, { ...this.ctx.upstream, agent: secure ? this.secureAgent : this.agent }, (result) => {
      this.bytes.add(result.bytesOut + result.bytesIn);
      const record: RecordFields = { kind, destination: verdict.label, target, startedAt, ...result };
      if (verdict.credential) record.injectedHeader = verdict.credential.header;
      if (traceparent) record.traceparent = traceparent;
      this.record(record);
    });
  }

  /** A client of the guest's HTTP proxy: its bytes are parsed here, by node's HTTP server. */
  private proxyClient(stream: Stream): void {
    const refusal = this.hold(stream);
    if (refusal) {
      this.record({ kind: "proxy-request", destination: UNLISTED, target: "http-proxy", outcome: "refused", reason: refusal, startedAt: nowMs() });
      return this.fail(stream, 403, refusal);
    }
    stream.respond({ ":status": 200 });
    this.proxy.emit("connection", stream);
  }

  private async onProxyConnect(req: http.IncomingMessage, guest: Duplex, head: Buffer): Promise<void> {
    guest.on("error", () => undefined);
    if (head.length) guest.unshift(head);
    await this.establish(guest, parseAuthority(req.url ?? ""), String(req.url), "proxy-request", {
      established: () => guest.write("HTTP/1.1 200 Connection Established\r\n\r\n"),
      failed: (status, reason) =>
        guest.end(`HTTP/1.1 ${status} ${status === 403 ? "Forbidden" : "Bad Gateway"}\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nmcpvisor egress: ${reason}\n`),
    });
  }

  private async onProxyRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const startedAt = nowMs();
    let url: URL;
    try {
      url = new URL(req.url ?? "");
      // https:// in absolute form is what some clients (axios) send a proxy instead of CONNECT: the
      // gateway then makes the TLS connection upstream itself, verified as for a credential.
      if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error("only http:// and https:// URLs");
    } catch (err) {
      res.writeHead(400, { "content-type": "text/plain" }).end(`mcpvisor egress proxy: ${(err as Error).message}\n`);
      return;
    }
    const secure = url.protocol === "https:";
    const port = Number(url.port || (secure ? 443 : 80));
    const host = url.hostname.replace(/^\[|\]$/g, "");
    const verdict = await this.ctx.policy.decide(host, port);
    if (!verdict.allowed) {
      this.record({ kind: "proxy-request", destination: verdict.label, target: `${host}:${port}`, outcome: "refused", reason: verdict.reason, startedAt });
      res.writeHead(403, { "content-type": "text/plain" }).end(`mcpvisor egress refused ${host}:${port}: ${verdict.reason}\n`);
      return;
    }
    this.forward(req, res, verdict, secure, `${url.pathname}${url.search}`, "proxy-request");
  }
}

/** `host:port` or `[v6]:port`; undefined for anything else. */
function parseAuthority(authority: string): { host: string; port: number } | undefined {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(authority);
  if (!match) return undefined;
  const port = Number(match[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host: (match[1] ?? match[2])!, port };
}
