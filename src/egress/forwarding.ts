/**
 * What the gateway does with a connection the policy allowed: a plain tunnel to the checked address,
 * or, for a destination with a credential, HTTP through the gateway (the guest's TLS terminated with
 * this installation's CA, a verified TLS connection of the gateway's own upstream, the header added to
 * every request). Requests from the guest's HTTP proxy take the second road without the header unless
 * their destination has one.
 */
import * as http from "node:http";
import * as https from "node:https";
import { isIP } from "node:net";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import * as tls from "node:tls";
import type { Verdict } from "./policy.js";

export type Allowed = Extract<Verdict, { allowed: true }>;

const CONNECT_TIMEOUT_MS = 10_000;
/** Headers about one hop, not the request: never forwarded (RFC 9110 7.6.1). */
const HOP_BY_HOP = new Set(["connection", "proxy-connection", "keep-alive", "proxy-authorization", "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade"]);

/** Certificate errors of an upstream TLS handshake: reported as such (`tls_failed`), not as a network failure. */
const CERTIFICATE_ERRORS = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ERR_TLS_CERT_ALTNAME_INVALID|HOSTNAME_MISMATCH/;
export function isCertificateError(err: unknown): boolean {
  return CERTIFICATE_ERRORS.test(String((err as NodeJS.ErrnoException)?.code ?? ""));
}

/** A TCP connection to the checked address (never the name again: no second lookup to rebind). */
export function connectUpstream(verdict: Allowed): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: verdict.address, port: verdict.port });
    const timer = setTimeout(() => socket.destroy(new Error(`connect to ${verdict.host}:${verdict.port} timed out after ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.off("error", reject);
      resolve(socket);
    });
    socket.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Counts what crosses a pair of streams and ends both when either ends. */
export function splice(guest: Duplex, upstream: Duplex, count: (out: number, inn: number) => void, done: (error?: Error) => void): void {
  let finished = false;
  const finish = (error?: Error) => {
    if (finished) return;
    finished = true;
    guest.destroy();
    upstream.destroy();
    done(error);
  };
  guest.on("data", (chunk: Buffer) => count(chunk.length, 0));
  upstream.on("data", (chunk: Buffer) => count(0, chunk.length));
  guest.pipe(upstream);
  upstream.pipe(guest);
  guest.on("error", finish);
  upstream.on("error", finish);
  guest.on("close", () => finish());
  upstream.on("close", () => finish());
}

export interface RequestOutcome {
  outcome: "ok" | "failed" | "tls_failed";
  reason?: string;
  bytesOut: number;
  bytesIn: number;
}

/** Options for the gateway's own upstream requests. */
export interface UpstreamOptions {
  /** Trusted for upstream TLS besides the system store (an operator's private CA; the tests' CA). */
  extraCa?: string;
}

/**
 * Sends one guest HTTP request on to `verdict`'s address (TLS when `secure`), with the credential's
 * header set (replacing whatever the guest sent under that name), and streams the answer back.
 */
export function forwardRequest(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  verdict: Allowed,
  secure: boolean,
  path: string,
  options: UpstreamOptions & { agent: http.Agent | https.Agent },
  done: (result: RequestOutcome) => void,
): void {
  const headers: http.OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(name) && value !== undefined) headers[name] = value;
  if (verdict.credential) {
    for (const name of Object.keys(headers)) if (name === verdict.credential.header.toLowerCase()) delete headers[name];
    headers[verdict.credential.header] = verdict.credential.value;
  }
  let bytesOut = 0;
  let bytesIn = 0;
  const requestOptions: https.RequestOptions = {
    host: verdict.address,
    port: verdict.port,
    method: req.method,
    path,
    headers,
    agent: options.agent,
    timeout: CONNECT_TIMEOUT_MS,
  };
  if (secure) {
    if (!isIP(verdict.host)) requestOptions.servername = verdict.host;
    if (options.extraCa) requestOptions.ca = [...tls.rootCertificates, options.extraCa];
  }
  const upstream = (secure ? https : http).request(requestOptions);
  upstream.on("timeout", () => upstream.destroy(new Error(`no answer from ${verdict.host}:${verdict.port} within ${CONNECT_TIMEOUT_MS} ms`)));
  upstream.on("response", (answer) => {
    const back: http.OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(answer.headers)) if (!HOP_BY_HOP.has(name) && value !== undefined) back[name] = value;
    res.writeHead(answer.statusCode ?? 502, back);
    answer.on("data", (chunk: Buffer) => (bytesIn += chunk.length));
    answer.pipe(res);
    answer.on("end", () => done({ outcome: "ok", bytesOut, bytesIn }));
    answer.on("error", (err) => done({ outcome: "failed", reason: err.message, bytesOut, bytesIn }));
  });
  upstream.on("error", (err) => {
    const certificate = isCertificateError(err);
    const reason = certificate
      ? `the certificate of ${verdict.host}:${verdict.port} failed verification (${(err as NodeJS.ErrnoException).code})`
      : `${verdict.host}:${verdict.port}: ${err.message}`;
    if (!res.headersSent) {
      res.writeHead(502, { "content-type": "text/plain; charset=utf-8", connection: "close" });
      res.end(`mcpvisor egress: ${reason}\n`);
    } else {
      res.destroy();
    }
    done({ outcome: certificate ? "tls_failed" : "failed", reason, bytesOut, bytesIn });
  });
  req.on("data", (chunk: Buffer) => (bytesOut += chunk.length));
  req.pipe(upstream);
}

/**
 * Terminates the guest's TLS for `verdict.host` with a leaf of this installation's CA when the guest
 * speaks TLS (a first byte of 0x16, a handshake record), or takes its bytes as plain HTTP otherwise.
 */
export async function terminateGuestTls(guest: Duplex, verdict: Allowed, leafFor: (name: string) => Promise<{ keyPem: string; certPem: string }>): Promise<{ socket: Duplex; secure: boolean }> {
  const first = await new Promise<Buffer | null>((resolve) => {
    const onData = (chunk: Buffer) => {
      cleanup();
      guest.pause();
      resolve(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(null);
    };
    const cleanup = () => {
      guest.off("data", onData);
      guest.off("end", onEnd);
      guest.off("close", onEnd);
    };
    guest.on("data", onData);
    guest.once("end", onEnd);
    guest.once("close", onEnd);
  });
  if (first === null) throw new Error("the guest closed the connection before sending anything");
  guest.unshift(first);
  if (first[0] !== 0x16) return { socket: guest, secure: false };
  const leaf = await leafFor(verdict.host);
  const socket = new tls.TLSSocket(guest, {
    isServer: true,
    secureContext: tls.createSecureContext({ key: leaf.keyPem, cert: leaf.certPem }),
    ALPNProtocols: ["http/1.1"],
  });
  return { socket, secure: true };
}
