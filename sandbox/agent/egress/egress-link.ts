/**
 * The agent's end of the egress link (protocol: ../egress-protocol.ts): one HTTP/2 client session at a
 * time over the egress port, opened when first needed and dropped on every resume.
 */
import { randomBytes } from "node:crypto";
import * as http2 from "node:http2";
import { Duplex } from "node:stream";
import type { Channel } from "../channel.js";
import { HTTP_PROXY_PATH, REASON_HEADER, RESOLVE_PATH, syncLine, SyncLineFinder } from "../egress-protocol.js";

/** The gateway answers a sync line at once; past this the session is dropped and the next use tries anew. */
const SYNC_TIMEOUT_MS = 5_000;
/** A stream's answer: the gateway's upstream connect gives up after 10 s. */
const ANSWER_TIMEOUT_MS = 15_000;

export type NameAnswer = { ok: true; address: string } | { ok: false; reason: string };
export type TunnelAnswer = { ok: true; stream: http2.ClientHttp2Stream } | { ok: false; reason: string };

/** The HTTP/2 session's byte stream: writes go to the port, reads come from what the link routes here. */
class PortStream extends Duplex {
  private readWaiter: (() => void) | undefined;

  constructor(private readonly channel: Channel) {
    super();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.channel.write(chunk).then(() => callback(), callback);
  }

  override _read(): void {
    const waiter = this.readWaiter;
    this.readWaiter = undefined;
    waiter?.();
  }

  /** Bytes from the host; resolves when the session wants more (backpressure on the port's read loop). */
  deliver(chunk: Buffer): Promise<void> {
    if (this.destroyed || this.push(chunk)) return Promise.resolve();
    return new Promise((resolve) => (this.readWaiter = resolve));
  }
}

interface Session {
  finder: SyncLineFinder;
  stream: PortStream;
  synced: Promise<http2.ClientHttp2Session>;
  markSynced: () => void;
  client?: http2.ClientHttp2Session;
}

export class EgressLink {
  private session: Session | undefined;
  /** Every stream opened since the last reset: a resume resets them all. */
  private readonly streams = new Set<http2.ClientHttp2Stream>();

  constructor(private readonly channel: Channel) {
    channel.start((chunk) => this.onChunk(chunk), () => undefined);
  }

  private async onChunk(chunk: Buffer): Promise<void> {
    const session = this.session;
    if (!session) return; // stale bytes of a session dropped at a resume
    if (session.client) return session.stream.deliver(chunk);
    let found;
    try {
      found = session.finder.push(chunk);
    } catch {
      this.reset();
      return;
    }
    if (!found) return;
    session.markSynced();
    if (found.rest.length) await session.stream.deliver(found.rest);
  }

  private open(): Promise<http2.ClientHttp2Session> {
    if (this.session) return this.session.synced;
    const nonce = randomBytes(12).toString("hex");
    const stream = new PortStream(this.channel);
    let markSynced!: () => void;
    const synced = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.drop(session);
        stream.destroy();
        reject(new Error(`the gateway did not answer the egress sync line within ${SYNC_TIMEOUT_MS} ms`));
      }, SYNC_TIMEOUT_MS);
      markSynced = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    const session: Session = {
      finder: new SyncLineFinder(nonce),
      stream,
      markSynced,
      synced: synced.then(() => {
        const client = http2.connect("http://egress.mcpvisor", {
          createConnection: () => stream,
          settings: { initialWindowSize: 1024 * 1024 },
        });
        client.on("error", () => this.drop(session));
        client.on("close", () => this.drop(session));
        session.client = client;
        return client;
      }),
    };
    this.session = session;
    void this.channel.write(syncLine(nonce));
    return session.synced;
  }

  private drop(session: Session): void {
    if (this.session === session) this.session = undefined;
  }

  /** After a resume: every connection carried so far is reset, and the next use opens a new session. */
  reset(): void {
    for (const stream of this.streams) stream.destroy();
    this.streams.clear();
    const session = this.session;
    this.session = undefined;
    session?.client?.destroy();
    session?.stream.destroy();
  }

  private async request(headers: http2.OutgoingHttpHeaders): Promise<{ stream: http2.ClientHttp2Stream; status: number; reason: string }> {
    const client = await this.open();
    const stream = client.request(headers, headers[":method"] === "GET" ? { endStream: true } : {});
    this.streams.add(stream);
    stream.on("close", () => this.streams.delete(stream));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        stream.destroy();
        reject(new Error(`no answer from the gateway within ${ANSWER_TIMEOUT_MS} ms`));
      }, ANSWER_TIMEOUT_MS);
      stream.once("close", () => clearTimeout(timer));
      stream.once("response", (h) => {
        clearTimeout(timer);
        const reason = h[REASON_HEADER];
        resolve({ stream, status: Number(h[":status"]), reason: typeof reason === "string" ? decodeURIComponent(reason) : "" });
      });
      stream.once("error", reject);
      stream.once("close", () => reject(new Error("egress stream closed before its answer")));
    });
  }

  async resolve(name: string): Promise<NameAnswer> {
    try {
      const { stream, status, reason } = await this.request({ ":method": "GET", ":path": `${RESOLVE_PATH}?name=${encodeURIComponent(name)}` });
      const chunks: Buffer[] = [];
      for await (const chunk of stream) chunks.push(chunk as Buffer);
      if (status !== 200) return { ok: false, reason: reason || `status ${status}` };
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { address?: unknown };
      return typeof body.address === "string" ? { ok: true, address: body.address } : { ok: false, reason: "bad answer" };
    } catch (err) {
      return { ok: false, reason: (err as Error).message };
    }
  }

  /** A tunnel to `host:port` (a name, or an address the guest dialled without asking DNS). */
  connect(host: string, port: number): Promise<TunnelAnswer> {
    const authority = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
    return this.tunnel({ ":method": "CONNECT", ":authority": authority });
  }

  /** A stream for one client of the guest's HTTP proxy; the gateway parses what it sends. */
  proxy(): Promise<TunnelAnswer> {
    return this.tunnel({ ":method": "POST", ":path": HTTP_PROXY_PATH });
  }

  private async tunnel(headers: http2.OutgoingHttpHeaders): Promise<TunnelAnswer> {
    try {
      const { stream, status, reason } = await this.request(headers);
      if (status === 200) return { ok: true, stream };
      stream.destroy();
      return { ok: false, reason: reason || `status ${status}` };
    } catch (err) {
      return { ok: false, reason: (err as Error).message };
    }
  }
}
