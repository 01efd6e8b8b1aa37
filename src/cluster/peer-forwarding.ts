import { createHmac, timingSafeEqual } from "node:crypto";
import { Agent, request, type IncomingMessage, type ServerResponse } from "node:http";
import type { Logger } from "pino";
import { events } from "../telemetry/events.js";

const BY = "x-mcpvisor-forwarded-by";
const AT = "x-mcpvisor-forwarded-at";
const SIGNATURE = "x-mcpvisor-forward-signature";
/** A forwarded request older than this (clock skew included) is not taken as forwarded. */
const MAX_AGE_MS = 30_000;
/** How long the owner may take to accept the connection before it counts as gone. */
const CONNECT_TIMEOUT_MS = 1_000;
/** Headers that describe one connection, not the request: never passed on (RFC 9110, 7.6.1). */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "content-length", BY, AT, SIGNATURE]);

/**
 * Requests for a session that runs on another node go to that node, in one hop (docs/design/cluster.md).
 * The node that received the request signs it, so the owner knows a peer sent it: it is not charged to
 * the tenant's rate again, and never forwarded again. The client's own credential travels with it and
 * is checked again by the owner.
 */
export class PeerForwarding {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 512 });

  constructor(
    private readonly nodeId: string,
    private readonly secret: string,
    private readonly log: Logger,
  ) {}

  private sign(by: string, at: string, method: string, url: string): string {
    return createHmac("sha256", this.secret).update([by, at, method, url].join("\n")).digest("base64url");
  }

  /** The peer node that forwarded this request, when its signature is good and recent; else undefined. */
  forwardedBy(req: IncomingMessage): string | undefined {
    const by = req.headers[BY];
    const at = req.headers[AT];
    const signature = req.headers[SIGNATURE];
    if (typeof by !== "string" || typeof at !== "string" || typeof signature !== "string") return undefined;
    if (!(Math.abs(Date.now() - Number(at)) <= MAX_AGE_MS)) return undefined;
    const expected = Buffer.from(this.sign(by, at, req.method ?? "", req.url ?? ""));
    const given = Buffer.from(signature);
    return expected.length === given.length && timingSafeEqual(expected, given) ? by : undefined;
  }

  /**
   * Sends the request (its body already read) to `target` and streams the answer back. Resolves false,
   * with nothing written to `res`, when the owner cannot be reached; true once the answer is on its way.
   */
  forward(req: IncomingMessage, res: ServerResponse, body: string | undefined, target: { node: string; url: string }): Promise<boolean> {
    const at = String(Date.now());
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(req.headers)) if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value;
    headers[BY] = this.nodeId;
    headers[AT] = at;
    headers[SIGNATURE] = this.sign(this.nodeId, at, req.method ?? "", req.url ?? "");
    if (body !== undefined) headers["content-length"] = String(Buffer.byteLength(body));
    return new Promise((resolve) => {
      const url = new URL(req.url ?? "/", target.url);
      const upstream = request(url, { method: req.method, headers, agent: this.agent });
      let answered = false;
      const gone = (why: string) => {
        if (answered) return res.destroy();
        answered = true;
        this.log.warn({ owner: target.node, url: target.url, why }, "the node running a session cannot be reached");
        events.cluster.publish({ kind: "forward", outcome: "unreachable" });
        upstream.destroy();
        resolve(false);
      };
      const connecting = setTimeout(() => gone(`no connection within ${CONNECT_TIMEOUT_MS} ms`), CONNECT_TIMEOUT_MS);
      upstream.once("socket", (socket) => {
        if (!socket.connecting) return clearTimeout(connecting); // a kept-alive connection
        socket.once("connect", () => clearTimeout(connecting));
      });
      upstream.once("error", (err) => {
        clearTimeout(connecting);
        gone(err.message);
      });
      upstream.once("response", (answer) => {
        answered = true;
        clearTimeout(connecting);
        events.cluster.publish({ kind: "forward", outcome: "ok" });
        res.writeHead(answer.statusCode ?? 502, withoutHopByHop(answer.headers));
        // A stream (SSE) is flushed as it comes; the client going away ends the upstream request too.
        res.flushHeaders();
        answer.pipe(res);
        resolve(true);
      });
      // The client going away (or the answer ending) ends the forwarded request with it.
      res.once("close", () => upstream.destroy());
      upstream.end(body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

function withoutHopByHop(headers: IncomingMessage["headers"]): Record<string, string | string[]> {
  const kept: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined && (name === "content-length" || !HOP_BY_HOP.has(name))) kept[name] = value;
  return kept;
}
