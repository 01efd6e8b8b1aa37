import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import tls from "node:tls";
import { CertificateAuthority } from "./certificate-authority.js";

const dirs: string[] = [];
after(() => Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true }))));

async function caDir(): Promise<string> {
  const parent = await mkdtemp(join(tmpdir(), "mcpv-ca-"));
  dirs.push(parent);
  return join(parent, "ca");
}

/** A TLS server presenting `leafFor(name)`; resolves with its port. */
async function serveLeaf(ca: CertificateAuthority, name: string): Promise<{ port: number; close: () => void }> {
  const { keyPem, certPem } = await ca.leafFor(name);
  const server = tls.createServer({ key: keyPem, cert: certPem }, (socket) => socket.end("ok"));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { port: (server.address() as AddressInfo).port, close: () => server.close() };
}

/** Connects with verification on; resolves with what the server wrote, rejects on a TLS error. */
async function fetchOverTls(options: tls.ConnectionOptions): Promise<string> {
  const socket = tls.connect({ host: "127.0.0.1", ...options });
  let received = "";
  socket.setEncoding("utf8").on("data", (chunk: string) => (received += chunk));
  await once(socket, "end");
  return received;
}

test("creates the CA once, with private files, and loads the same one afterwards", async () => {
  const dir = await caDir();
  const first = await CertificateAuthority.loadOrCreate(dir);
  const second = await CertificateAuthority.loadOrCreate(dir);
  assert.equal(second.certPem, first.certPem);
  assert.equal((await stat(join(dir, "ca-key.pem"))).mode & 0o777, 0o600);
  assert.equal((await stat(dir)).mode & 0o777, 0o700);
  assert.deepEqual((await readdir(dir)).sort(), ["ca-key.pem", "ca.pem"], "no temporary files left behind");

  const cert = new X509Certificate(first.certPem);
  assert.equal(cert.ca, true);
  assert.match(cert.subject, /CN=mcpvisor egress CA \(/);
  const years = (Date.parse(cert.validTo) - Date.now()) / (365 * 86_400_000);
  assert.ok(years > 9.9 && years < 10.1, `valid for ${years} years`);
});

test("concurrent creators agree on one CA", async () => {
  const dir = await caDir();
  const [a, b] = await Promise.all([CertificateAuthority.loadOrCreate(dir, "race"), CertificateAuthority.loadOrCreate(dir, "race")]);
  assert.equal(a.certPem, b.certPem);
  assert.equal((await CertificateAuthority.loadOrCreate(dir)).certPem, a.certPem);
});

test("leaves verify against the CA by DNS name and by IP literal, and not against another CA", async (t) => {
  const ca = await CertificateAuthority.loadOrCreate(await caDir(), "test CA");
  const other = await CertificateAuthority.loadOrCreate(await caDir(), "other CA");

  const byName = await serveLeaf(ca, "api.test");
  t.after(byName.close);
  assert.equal(await fetchOverTls({ port: byName.port, servername: "api.test", ca: ca.certPem }), "ok");
  await assert.rejects(fetchOverTls({ port: byName.port, servername: "api.test", ca: other.certPem }), {
    code: "SELF_SIGNED_CERT_IN_CHAIN", // the chain carries a CA the client does not trust
  });
  await assert.rejects(fetchOverTls({ port: byName.port, servername: "other.test", ca: ca.certPem }), {
    code: "ERR_TLS_CERT_ALTNAME_INVALID",
  });

  const byIp = await serveLeaf(ca, "127.0.0.1");
  t.after(byIp.close);
  assert.equal(await fetchOverTls({ port: byIp.port, ca: ca.certPem }), "ok");
});

test("leaves are cached per name, carry serverAuth and the right SAN, and bad names are refused", async () => {
  const ca = await CertificateAuthority.loadOrCreate(await caDir(), "test CA");
  const first = await ca.leafFor("API.Test.");
  assert.equal(await ca.leafFor("api.test"), first, "a name's leaf is issued once");
  const other = await ca.leafFor("other.test");
  assert.equal(other.keyPem, first.keyPem, "one leaf key per CA instance");

  const leaf = new X509Certificate(first.certPem);
  assert.equal(leaf.checkHost("api.test"), "api.test");
  assert.equal(leaf.ca, false);
  assert.deepEqual(leaf.keyUsage, ["1.3.6.1.5.5.7.3.1"]);
  assert.ok(leaf.verify(new X509Certificate(ca.certPem).publicKey));
  assert.ok(Date.parse(leaf.validFrom) < Date.now() - 59 * 60_000, "backdated an hour");
  assert.ok(first.certPem.endsWith(ca.certPem), "the chain ends with the CA");

  const v6 = new X509Certificate((await ca.leafFor("::ffff:10.0.0.1")).certPem);
  assert.equal(v6.checkIP("::ffff:a00:1"), "::ffff:a00:1");

  for (const bad of ["", "*.api.test", "a..b", "has space.test", "bücher.test", `${"a".repeat(64)}.test`]) {
    await assert.rejects(ca.leafFor(bad), { code: "CA_INVALID_NAME" }, bad);
  }
});
