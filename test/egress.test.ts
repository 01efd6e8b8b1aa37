/**
 * Egress end to end (docs/design/egress.md), with real parts: PostgreSQL from Debian's packages and the
 * unmodified npm server-postgres; an HTTPS upstream whose certificate comes from a test CA; a DNS server
 * the gateway resolves with (so names can point at private addresses, as a rebinding attacker's would);
 * an unmodified npm fetch server; and our own exec server as a probe that tries what a hostile guest would.
 */
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { connect, eventually, sh, startReadyGateway } from "./helpers.js";
import { scratchDir } from "./scratch-dir.js";
import { startDnsServer, type DnsServer } from "./services/dns-server.js";
import { startHttpsUpstream, startHttpUpstream, type HttpsUpstream, type HttpUpstream } from "./services/https-upstream.js";
import { startPostgres, type Postgres } from "./services/postgres.js";
import { freePort } from "./services/free-port.js";

const SECRET = "s3cr3t-egress-token-4711";
process.env.MCPVISOR_TEST_EGRESS_TOKEN = SECRET;

type Gateway = Awaited<ReturnType<typeof startReadyGateway>>;
let pg: Postgres;
let dns: DnsServer;
let api: HttpsUpstream;
let untrusted: HttpsUpstream;
let plain: HttpUpstream;
let gateway: Gateway;
let gatewayPort: number;
let auditFile: string;


/** Runs a module snippet in the probe's guest and returns what it printed, parsed as JSON. */
async function probe<T>(client: Client, code: string): Promise<T> {
  const result = (await client.callTool({ name: "run_js", arguments: { code } })) as CallToolResult;
  const out = result.structuredContent as { stdout: string; stderr: string; exitCode: number };
  assert.equal(out.exitCode, 0, `probe failed: ${out.stderr}`);
  return JSON.parse(out.stdout) as T;
}

/** Guest-side helpers the probe snippets share: a TCP connect and an HTTP request through the guest's proxy. */
const GUEST_HELPERS = `
import net from "node:net"; import http from "node:http"; import dns from "node:dns";
// The guest agent accepts a connection before the gateway decides on it: a refusal shows as a reset right
// after connect. So a connection counts as made when it is still open a moment later.
const tcp = (port, host) => new Promise((res) => { const t0 = Date.now(); const s = net.connect(port, host);
  s.on("connect", () => setTimeout(() => { if (!s.destroyed) { s.destroy(); res({ ok: true }); } }, 1500));
  s.on("error", (e) => res({ ok: false, code: e.code, ms: Date.now() - t0 }));
  s.on("close", () => res({ ok: false, code: "closed", ms: Date.now() - t0 })); });
const viaProxy = (options) => new Promise((res) => { const req = http.request({ host: "127.0.0.1", port: 3128, ...options });
  req.on("response", (r) => { let body = ""; r.on("data", (d) => body += d); r.on("end", () => res({ status: r.statusCode, body })); });
  req.on("connect", (r, s) => { s.destroy(); res({ status: r.statusCode }); });
  req.on("error", (e) => res({ error: e.code })); req.end(); });
const lookup = (name) => dns.promises.lookup(name).then((a) => a.address, (e) => e.code);
`;

before(async () => {
  [pg, dns, api, untrusted, plain] = await Promise.all([
    startPostgres(),
    startDnsServer({ "api.test": "127.0.0.1", "untrusted.test": "127.0.0.1", "rebind.test": "10.11.12.13", "private.test": "127.0.0.1", "metadata.test": "169.254.169.254", "public.test": "93.184.216.34" }),
    startHttpsUpstream({ names: ["api.test"], expectedAuthorization: `Bearer ${SECRET}` }),
    startHttpsUpstream({ names: ["untrusted.test"] }),
    startHttpUpstream(),
  ]);
  await pg.query("drop table if exists egress_rows; create table egress_rows (id int, label text); insert into egress_rows values (1, 'first'), (2, 'second')");
  const dir = await scratchDir("mcpv-egress");
  const serversDir = join(dir, "servers");
  await import("node:fs/promises").then((fs) => fs.mkdir(serversDir));
  gatewayPort = await freePort();
  const credential = (destination: string) => ({ destination, header: "Authorization", value: "Bearer ${MCPVISOR_TEST_EGRESS_TOKEN}" });
  const manifests = {
    postgres: {
      name: "postgres",
      source: { kind: "npm", package: "@modelcontextprotocol/server-postgres", version: "0.6.2" },
      command: "node",
      args: ["node_modules/@modelcontextprotocol/server-postgres/dist/index.js", pg.url("host.internal")],
      network: { allow: [`host.internal:${pg.port}`] },
      // Well under server-postgres's pool idle timeout (10 s): the suspend waits for its connection to close.
      timeouts: { idleSuspendMs: 1_000 },
      pool: { prestarted: 1, warm: 0 },
    },
    fetch: {
      name: "fetch",
      source: { kind: "npm", package: "@tokenizin/mcp-npx-fetch", version: "1.0.0" },
      command: "node",
      args: ["node_modules/@tokenizin/mcp-npx-fetch/dist/index.js"],
      network: { allow: [`api.test:${api.port}`, `host.internal:${api.port}`], credentials: [credential(`api.test:${api.port}`)] },
      pool: { prestarted: 1, warm: 0 },
    },
    probe: {
      name: "probe",
      source: { kind: "bundle", entry: "servers/exec/server.ts" },
      command: "node",
      args: ["server.mjs"],
      network: {
        allow: [
          `host.internal:${pg.port}`, `host.internal:${plain.port}`, `host.internal:${gatewayPort}`, `host.internal:${api.port}`, `host.internal:${untrusted.port}`,
          `api.test:${api.port}`, `untrusted.test:${untrusted.port}`, "rebind.test:443", "public:80",
        ],
        credentials: [credential(`api.test:${api.port}`), credential(`untrusted.test:${untrusted.port}`)],
      },
      pool: { prestarted: 1, warm: 0 },
    },
  };
  for (const [name, manifest] of Object.entries(manifests)) await writeFile(join(serversDir, `${name}.json`), JSON.stringify(manifest, null, 2));
  await writeFile(join(serversDir, "exec.json"), await readFile(join(import.meta.dirname, "..", "servers", "exec.json")));
  const caFile = join(dir, "upstream-ca.pem");
  await writeFile(caFile, api.caPem);
  auditFile = join(dir, "audit.log");
  gateway = await startReadyGateway({
    serversDir,
    port: gatewayPort,
    egressResolver: [`${dns.address}:${dns.port}`],
    egressUpstreamCa: caFile,
    auditLog: auditFile,
  });
});

after(async () => {
  await gateway?.close();
  await Promise.all([dns?.close(), api?.close(), untrusted?.close(), plain?.close()]);
});

test("server-postgres queries a real PostgreSQL through host.internal, and again after its sandbox was suspended and resumed", { timeout: 120_000 }, async () => {
  const client = await connect(gateway.url("postgres"));
  const query = async () => {
    const result = (await client.callTool({ name: "query", arguments: { sql: "select id, label from egress_rows order by id" } })) as CallToolResult;
    assert.equal(result.isError, false, JSON.stringify(result));
    return JSON.parse((result.content[0] as { text: string }).text) as unknown;
  };
  const rows = [{ id: 1, label: "first" }, { id: 2, label: "second" }];
  assert.deepEqual(await query(), rows);
  const stats = () => gateway.pool.stats().find((s) => s.server === "postgres")!;
  await eventually(() => stats().suspended === 1, "the postgres session's sandbox to be suspended", 40_000);
  await pg.query("insert into egress_rows values (3, 'third')");
  assert.deepEqual(await query(), [...rows, { id: 3, label: "third" }], "the resumed sandbox opens a new connection and sees the new row");
  await pg.query("delete from egress_rows where id = 3");
  await client.close();

  const metrics = await gateway.metrics.text();
  assert.match(metrics, new RegExp(`mcpvisor_egress_connections_total\\{server="postgres",destination="host.internal:${pg.port}",outcome="ok"\\} [1-9]`));
  assert.match(metrics, /mcpvisor_egress_bytes_total\{server="postgres",direction="in"\} [1-9]/);
  const spans = gateway.tracing.traces(50).flatMap((t) => t.spans);
  assert.ok(spans.some((s) => s.name === "mcpvisor.egress tunnel" && s.attributes["mcpvisor.server"] === "postgres"), "an egress span under a call's trace");
});

test("an unmodified fetch server reaches an HTTPS API with a credential the gateway adds; the secret is never in the guest", { timeout: 60_000 }, async () => {
  const client = await connect(gateway.url("fetch"));
  const seen = api.requests.length;
  const result = (await client.callTool({ name: "fetch_json", arguments: { url: `https://api.test:${api.port}/echo-auth` } })) as CallToolResult;
  const text = (result.content[0] as { text: string }).text;
  assert.equal(result.isError, false, text);
  assert.deepEqual(JSON.parse(text), { authorized: true });
  assert.ok(!JSON.stringify(result).includes(SECRET), "the answer does not carry the secret");
  const request = api.requests.slice(seen).find((r) => r.url === "/echo-auth");
  assert.equal(request?.headers.authorization, `Bearer ${SECRET}`, "the upstream saw the injected header");
  await client.close();
});

test("the probe's guest: credentials are added, not visible; upstream certificates are verified", { timeout: 60_000 }, async () => {
  const client = await connect(gateway.url("probe"));
  const out = await probe<{ auth: unknown; untrusted: number; env: boolean }>(client, `
    const auth = await fetch("https://api.test:${api.port}/echo-auth", { headers: { authorization: "Bearer placeholder" } }).then((r) => r.json());
    const untrusted = await fetch("https://untrusted.test:${untrusted.port}/hello").then((r) => r.status, (e) => e.cause?.code ?? e.message);
    const fs = await import("node:fs");
    const env = fs.readdirSync("/proc").filter((p) => /^\\d+$/.test(p)).some((p) => { try { return fs.readFileSync("/proc/" + p + "/environ", "utf8").includes("${SECRET.slice(0, 12)}"); } catch { return false; } });
    console.log(JSON.stringify({ auth, untrusted, env }));`);
  assert.deepEqual(out.auth, { authorized: true }, "the guest's placeholder header was replaced by the secret");
  assert.equal(out.untrusted, 502, "an upstream certificate the gateway does not trust fails the request");
  assert.equal(out.env, false, "no process in the guest has the secret in its environment");
  await client.close();
});

test("what the policy does not grant is refused at once, logged and audited; the server's call gets an error, not a hang", { timeout: 60_000 }, async () => {
  const client = await connect(gateway.url("probe"));
  const out = await probe<Record<string, unknown>>(client, `${GUEST_HELPERS}
    console.log(JSON.stringify({
      allowedPort: await tcp(${pg.port}, "host.internal"),
      otherPortDirect: await tcp(${pg.port + 1}, "host.internal"),
      otherPortProxy: await viaProxy({ method: "CONNECT", path: "host.internal:${pg.port + 1}" }),
      gatewayPort: await tcp(${gatewayPort}, "host.internal"),
      metadataProxy: await viaProxy({ method: "CONNECT", path: "169.254.169.254:80" }),
      metadataName: await tcp(80, "metadata.test"),
      unlisted: await lookup("unlisted.test"),
      publicName: await lookup("public.test"),
      rebind: await lookup("rebind.test"),
      publicToPrivate: await tcp(80, "private.test"),
      publicToPrivateProxy: await viaProxy({ method: "CONNECT", path: "private.test:80" }),
      plainViaProxy: await viaProxy({ path: "http://host.internal:${plain.port}/hello", headers: { host: "host.internal:${plain.port}" } }),
      // What axios sends a proxy for an https:// URL: the request in absolute form, no CONNECT.
      httpsAbsoluteViaProxy: await viaProxy({ path: "https://api.test:${api.port}/echo-auth", headers: { host: "api.test:${api.port}" } }),
    }));`);
  assert.equal((out.allowedPort as { ok: boolean }).ok, true);
  for (const name of ["otherPortDirect", "gatewayPort", "metadataName", "publicToPrivate"]) {
    const r = out[name] as { ok: boolean; code: string; ms: number };
    assert.equal(r.ok, false, `${name} must not connect`);
    assert.ok(r.ms < 5_000, `${name} failed at once (${r.ms} ms), not after a hang`);
  }
  assert.equal((out.otherPortProxy as { status: number }).status, 403);
  assert.equal((out.metadataProxy as { status: number }).status, 403);
  assert.equal((out.publicToPrivateProxy as { status: number }).status, 403, "checked again at connect time, where the guest skipped DNS");
  assert.equal(out.unlisted, "ENOTFOUND");
  assert.equal(out.publicName, "93.184.216.34", "a name with a public address is answered under public:80");
  assert.equal(out.rebind, "ENOTFOUND", "a listed name resolving to a private address is not given to the guest");
  assert.deepEqual(out.plainViaProxy, { status: 200, body: "hello from upstream" }, "HTTP through the guest's proxy works where allowed");
  assert.deepEqual(out.httpsAbsoluteViaProxy, { status: 200, body: JSON.stringify({ authorized: true }) }, "an https:// URL sent to the proxy is fetched over verified TLS, with the credential");
  await client.close();

  await gateway.close(); // flushes the audit log; `after` closing it again is a no-op
  const audit = (await readFile(auditFile, "utf8")).split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  const refused = audit.filter((e) => e.event === "egress refused").map((e) => String(e.target));
  // Names are refused when the guest asks for them (DNS), connections when they are opened.
  for (const target of [`host.internal:${pg.port + 1}`, `host.internal:${gatewayPort}`, "169.254.169.254:80", "unlisted.test", "rebind.test", "private.test", "metadata.test", "private.test:80"]) {
    assert.ok(refused.includes(target), `audit has the refusal of ${target} (has: ${refused.join(", ")})`);
  }
  assert.ok(audit.some((e) => e.event === "egress upstream certificate failed" && e.target === `untrusted.test:${untrusted.port}`));
  assert.ok(audit.some((e) => e.event === "egress credential added" && e.injectedHeader === "Authorization" && e.server === "fetch"));
  assert.ok(!(await readFile(auditFile, "utf8")).includes(SECRET), "the audit log never holds the secret");
});

test("a server without `network` has no network device and no egress port", { timeout: 60_000 }, async () => {
  const gatewayAgain = await startReadyGateway({ servers: ["exec"] });
  try {
    const client = await connect(gatewayAgain.url("exec"));
    const out = await sh(client, "ls /sys/class/net; cat /sys/class/virtio-ports/*/name");
    assert.equal(out.stdout, "lo\nmcpvisor.agent\n");
    await client.close();
  } finally {
    await gatewayAgain.close();
  }
});
