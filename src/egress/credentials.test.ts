import assert from "node:assert/strict";
import { chmod, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { scratchDir } from "../../test/scratch-dir.js";
import { ConfigError } from "../config/gateway.js";
import { ServerManifestSchema, type ServerManifest } from "../config/manifest.js";
import { createLogger } from "../telemetry/log.js";
import { MissingSecretError, resolveSecret } from "./credentials.js";
import { Egress } from "./egress.js";

test("resolveSecret replaces ${NAME} from the given environment, and only from it", () => {
  assert.equal(resolveSecret("Bearer ${GITHUB_TOKEN}", { GITHUB_TOKEN: "ghp_abc123" }), "Bearer ghp_abc123");
  assert.equal(resolveSecret("${A}:${B_2}", { A: "user", B_2: "pass" }), "user:pass");
  assert.equal(resolveSecret("${A}${A}", { A: "x" }), "xx");
  assert.equal(resolveSecret("no reference", {}), "no reference");
  assert.equal(resolveSecret("$A and {A} stay", { A: "x" }), "$A and {A} stay");
  assert.throws(() => resolveSecret("Bearer ${GITHUB_TOKEN}", { OTHER: "x" }), (err: Error) => {
    assert.ok(err instanceof MissingSecretError);
    assert.match(err.message, /the environment variable GITHUB_TOKEN is not set in the gateway's environment/);
    return true;
  });
  assert.throws(() => resolveSecret("${EMPTY}", { EMPTY: "" }), { message: /EMPTY is not set/ }, "an empty variable is a missing one");
});

test("resolveSecret reads ${file:/path} without its trailing newline, and mixes references", async () => {
  const dir = await scratchDir("mcpv-secrets");
  const token = join(dir, "token");
  const crlf = join(dir, "crlf");
  const two = join(dir, "two-lines");
  await writeFile(token, "s3cret-from-file\n");
  await writeFile(crlf, "windows-secret\r\n");
  await writeFile(two, "line1\nline2\n\n");
  assert.equal(resolveSecret(`\${file:${token}}`, {}), "s3cret-from-file");
  assert.equal(resolveSecret(`\${file:${crlf}}`, {}), "windows-secret");
  assert.equal(resolveSecret(`\${file:${two}}`, {}), "line1\nline2\n", "one trailing newline only");
  assert.equal(resolveSecret(`Basic \${USER}:\${file:${token}} \${USER}`, { USER: "me" }), "Basic me:s3cret-from-file me");

  const missing = join(dir, "absent");
  assert.throws(() => resolveSecret(`\${file:${missing}}`, {}), (err: Error) => {
    assert.ok(err instanceof MissingSecretError);
    assert.equal(err.message, `cannot read the secret file ${missing}: ENOENT`);
    return true;
  });
  assert.throws(() => resolveSecret(`\${file:${dir}}`, {}), { message: new RegExp(`cannot read the secret file ${dir}: EISDIR`) });
  if (process.getuid?.() !== 0) {
    const locked = join(dir, "locked");
    await writeFile(locked, "x");
    await chmod(locked, 0o000);
    assert.throws(() => resolveSecret(`\${file:${locked}}`, {}), { message: new RegExp(`${locked}: EACCES`) });
  }
});

function manifest(name: string, value: string, allow = ["api.github.com:443"]): ServerManifest {
  return ServerManifestSchema.parse({
    name,
    source: { kind: "bundle", entry: "server.ts" },
    command: "node",
    network: { allow, credentials: [{ destination: allow[0], header: "Authorization", value }] },
  });
}

const plain = ServerManifestSchema.parse({ name: "plain", source: { kind: "bundle", entry: "server.ts" }, command: "node", network: { allow: ["host.internal:5432"] } });
const offline = ServerManifestSchema.parse({ name: "offline", source: { kind: "bundle", entry: "server.ts" }, command: "node" });

async function create(manifests: ServerManifest[], env: NodeJS.ProcessEnv, more: { upstreamCaFile?: string } = {}) {
  const cacheDir = await scratchDir("mcpv-egress-cache");
  const egress = await Egress.create({
    manifests,
    serversDir: "/etc/mcpvisor/servers",
    env,
    cacheDir,
    resolver: [],
    maxConnections: 8,
    gatewayPorts: new Set([8080]),
    log: createLogger("silent"),
    ...more,
  });
  return { egress, cacheDir };
}

test("Egress.create resolves every credential at start; a missing one names the manifest file and the field", async () => {
  await assert.rejects(create([plain, manifest("github", "Bearer ${MCPV_TEST_UNSET_TOKEN}")], {}), (err: Error) => {
    assert.ok(err instanceof ConfigError, err.name);
    assert.equal(
      err.message,
      "/etc/mcpvisor/servers/github.json: network.credentials[0].value: the environment variable MCPV_TEST_UNSET_TOKEN is not set in the gateway's environment",
    );
    return true;
  });
  await assert.rejects(create([manifest("filed", "${file:/nonexistent/mcpv-secret}")], {}), {
    name: "ConfigError",
    message: "/etc/mcpvisor/servers/filed.json: network.credentials[0].value: cannot read the secret file /nonexistent/mcpv-secret: ENOENT",
  });
});

test("Egress.create refuses a secret with a line break, which would split the HTTP header", async () => {
  await assert.rejects(create([manifest("github", "Bearer ${TOKEN}")], { TOKEN: "abc\r\nX-Injected: yes" }), {
    name: "ConfigError",
    message: "/etc/mcpvisor/servers/github.json: network.credentials[0].value: the secret contains a line break, which cannot go into an HTTP header",
  });
  const dir = await scratchDir("mcpv-secrets");
  const file = join(dir, "two-lines");
  await writeFile(file, "first\nsecond\n");
  await assert.rejects(create([manifest("github", `\${file:${file}}`)], {}), { name: "ConfigError", message: /github\.json: network\.credentials\[0\]\.value: the secret contains a line break/ });
});

test("Egress.create with resolvable secrets makes this installation's CA only when a credential needs it", async () => {
  const withCredential = await create([offline, plain, manifest("github", "Bearer ${TOKEN}")], { TOKEN: "ghp_0123456789" });
  assert.equal(withCredential.egress.openConnections, 0);
  assert.deepEqual((await readdir(join(withCredential.cacheDir, "egress-ca"))).sort(), ["ca-key.pem", "ca.pem"]);

  const without = await create([offline, plain], {});
  assert.deepEqual(await readdir(without.cacheDir), [], "no CA without a credential");

  await assert.rejects(create([plain], {}, { upstreamCaFile: "/nonexistent/ca.pem" }), {
    name: "ConfigError",
    message: "egressUpstreamCa: cannot read /nonexistent/ca.pem: ENOENT",
  });
});
