import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { CertificateAuthority } from "../../src/egress/certificate-authority.js";

export interface UpstreamRequest {
  method: string;
  url: string;
  /** As node parsed them: names lower-case. */
  headers: Record<string, string | string[] | undefined>;
}

export interface HttpUpstream {
  port: number;
  /** Every request seen, in order. */
  requests: UpstreamRequest[];
  close(): Promise<void>;
}

export interface HttpsUpstream extends HttpUpstream {
  /** The test CA that issued the server's certificates: what a client must trust to reach it. */
  caPem: string;
}

export interface UpstreamOptions {
  /** The Authorization header value GET /echo-auth accepts; without it nothing is authorized. */
  expectedAuthorization?: string;
}

/**
 * A real HTTPS server playing an upstream API on 127.0.0.1 (random port), with a CA of its own and a
 * certificate per name in `names`, chosen by SNI (the first name's when the client sends none or
 * another). Routes: see `respond`.
 */
export async function startHttpsUpstream(options: UpstreamOptions & { names: string[] }): Promise<HttpsUpstream> {
  if (options.names.length === 0) throw new Error("startHttpsUpstream needs at least one name to issue a certificate for");
  const contexts = new Map<string, tls.SecureContext>();
  let fallback: { key: string; cert: string } | undefined;
  const dir = await mkdtemp(join(tmpdir(), "mcpv-upstream-ca-"));
  let ca: CertificateAuthority;
  try {
    ca = await CertificateAuthority.loadOrCreate(join(dir, "ca"), "mcpvisor test upstream CA");
    for (const name of options.names) {
      const { keyPem, certPem } = await ca.leafFor(name);
      contexts.set(name.toLowerCase(), tls.createSecureContext({ key: keyPem, cert: certPem }));
      fallback ??= { key: keyPem, cert: certPem };
    }
  } finally {
    await rm(dir, { recursive: true, force: true }); // the CA and its leaves are in memory by now
  }
  const requests: UpstreamRequest[] = [];
  const server = https.createServer(
    // The server's own key and cert serve clients without SNI; SNICallback's undefined falls back to them.
    { ...fallback, SNICallback: (servername, done) => done(null, contexts.get(servername.toLowerCase())) },
    (req, res) => respond(req, res, requests, options.expectedAuthorization),
  );
  return { ...(await listen(server, requests)), caPem: ca.certPem };
}

/** The same routes and request log as startHttpsUpstream, over plain HTTP. */
export async function startHttpUpstream(options: UpstreamOptions = {}): Promise<HttpUpstream> {
  const requests: UpstreamRequest[] = [];
  const server = http.createServer((req, res) => respond(req, res, requests, options.expectedAuthorization));
  return listen(server, requests);
}

/**
 * GET /echo-auth: JSON {authorized}, whether Authorization equals the expected value; it never echoes a
 * header, so a test can prove a credential arrived without any response carrying it back to a guest.
 * GET /hello: text "hello from upstream". Anything else: 404.
 */
function respond(req: http.IncomingMessage, res: http.ServerResponse, requests: UpstreamRequest[], expectedAuthorization: string | undefined): void {
  requests.push({ method: req.method ?? "", url: req.url ?? "", headers: { ...req.headers } });
  const path = new URL(req.url ?? "/", "http://upstream").pathname;
  if (req.method === "GET" && path === "/echo-auth") {
    const authorized = expectedAuthorization !== undefined && req.headers.authorization === expectedAuthorization;
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ authorized }));
  } else if (req.method === "GET" && path === "/hello") {
    res.writeHead(200, { "content-type": "text/plain; charset=utf-8" }).end("hello from upstream");
  } else {
    res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end("not found");
  }
}

async function listen(server: http.Server, requests: UpstreamRequest[]): Promise<HttpUpstream> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    close: () =>
      new Promise((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections(); // keep-alive clients would otherwise hold close() open
      }),
  };
}
