import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { configFrom, configOptions, parse } from "../cli/common.js";
import { CONFIG_KEYS, envName, flagName, resolveGatewayConfig, type ConfigKey, type GatewayConfig } from "./gateway.js";

/** A value for every setting as its variable would hold it, and what it parses to; a new key must add one. */
const SAMPLES = {
  host: ["localhost", "localhost"],
  port: ["9000", 9000],
  cacheDir: ["/c", "/c"],
  runDir: ["/r", "/r"],
  serversDir: ["/s", "/s"],
  servers: ["exec,memory", ["exec", "memory"]],
  accel: ["tcg", "tcg"],
  sessionIdleMs: ["1000", 1000],
  maxVms: ["3", 3],
  guestRunSlots: ["4", 4],
  vmQueue: ["0", 0],
  vmQueueTimeoutMs: ["500", 500],
  sessionRetentionMs: ["60000", 60000],
  maxBodyBytes: ["1024", 1024],
  allowedHosts: ["a.example,b.example", ["a.example", "b.example"]],
  logLevel: ["debug", "debug"],
  logFormat: ["json", "json"],
  publicUrl: ["https://gw.example/", "https://gw.example"],
  tenantsFile: ["/t.json", "/t.json"],
  oauthIssuer: ["https://issuer.example", "https://issuer.example"],
  oauthJwksUrl: ["https://issuer.example/jwks", "https://issuer.example/jwks"],
  oauthTenantClaim: ["org", "org"],
  oauthScopes: ["mcp:read mcp:call", ["mcp:read", "mcp:call"]],
  oauthAdminScope: ["root", "root"],
  insecureNoAuth: ["1", true],
  auditLog: ["off", "off"],
  maxHeaderBytes: ["2048", 2048],
  maxJsonDepth: ["8", 8],
  headersTimeoutMs: ["700", 700],
  requestTimeoutMs: ["900", 900],
  egressResolver: ["127.0.0.1:5353", ["127.0.0.1:5353"]],
  egressUpstreamCa: ["/etc/mcpvisor/upstream-ca.pem", "/etc/mcpvisor/upstream-ca.pem"],
  egressMaxConnections: ["64", 64],
  clusterRedis: ["redis://127.0.0.1:6390/2", "redis://127.0.0.1:6390/2"],
  clusterStore: ["/srv/mcpvisor", "/srv/mcpvisor"],
  clusterSecret: ["0123456789abcdef", "0123456789abcdef"],
  nodeId: ["node-a", "node-a"],
  nodeUrl: ["http://10.0.0.7:8080/", "http://10.0.0.7:8080"],
  nodeLeaseMs: ["5000", 5000],
  drainTimeoutMs: ["1000", 1000],
  kvmCpu: ["Skylake-Server-v4", "Skylake-Server-v4"],
} satisfies Record<ConfigKey, [string, unknown]>;

test("every setting is read from its variable, MCPVISOR_ and its name in upper snake case", () => {
  assert.equal(envName("sessionIdleMs"), "MCPVISOR_SESSION_IDLE_MS");
  assert.deepEqual(Object.keys(SAMPLES).sort(), [...CONFIG_KEYS].sort(), "a sample per schema key");
  for (const key of CONFIG_KEYS) {
    const [text, expected] = SAMPLES[key];
    // Cluster mode needs its store and secret as well: given here so the key alone is what is read.
    const companions = key === "clusterRedis" ? { MCPVISOR_CLUSTER_STORE: "/srv/mcpvisor", MCPVISOR_CLUSTER_SECRET: "0123456789abcdef" } : {};
    const config = resolveGatewayConfig({}, { ...companions, [envName(key)]: text });
    assert.deepEqual(config[key], expected, envName(key));
    assert.notDeepEqual(resolveGatewayConfig({}, {})[key], expected, `${key}: the sample differs from the default`);
  }
});

test("flags beat the environment; an empty variable counts as unset", () => {
  const config = resolveGatewayConfig({ port: 9000 }, { MCPVISOR_PORT: "7000", MCPVISOR_ACCEL: "tcg", MCPVISOR_TENANTS_FILE: "" });
  assert.equal(config.port, 9000);
  assert.equal(config.accel, "tcg");
  assert.equal(config.tenantsFile, undefined);
});

test("a bad value names its variable or flag, the value, and what is expected", () => {
  const refused = (flags: Partial<GatewayConfig>, env: NodeJS.ProcessEnv, message: RegExp) =>
    assert.throws(() => resolveGatewayConfig(flags, env), (err: Error) => err.name === "ConfigError" && message.test(err.message));
  refused({}, { MCPVISOR_MAX_BODY_BYTES: "lots" }, /MCPVISOR_MAX_BODY_BYTES="lots": expected a number/);
  refused({}, { MCPVISOR_HEADERS_TIMEOUT_MS: "1.5" }, /MCPVISOR_HEADERS_TIMEOUT_MS="1.5": expected a whole number/);
  refused({}, { MCPVISOR_REQUEST_TIMEOUT_MS: "0" }, /MCPVISOR_REQUEST_TIMEOUT_MS="0": .*>=1/);
  refused({}, { MCPVISOR_ACCEL: "fast" }, /MCPVISOR_ACCEL="fast": .*"auto"\|"kvm"\|"tcg"/);
  refused({}, { MCPVISOR_LOG_FORMAT: "xml" }, /MCPVISOR_LOG_FORMAT="xml": .*"auto"\|"json"\|"pretty"/);
  refused({}, { MCPVISOR_INSECURE_NO_AUTH: "yes" }, /MCPVISOR_INSECURE_NO_AUTH="yes": expected 1, true, 0 or false/);
  refused({ port: "http" as never }, { MCPVISOR_PORT: "80" }, /--port="http": expected a number/);
});

test("mcpvisor start has a flag per setting: --max-body-bytes, --headers-timeout-ms, --request-timeout-ms, ...", () => {
  assert.equal(flagName("maxBodyBytes"), "max-body-bytes");
  const argv = ["--max-body-bytes", "1024", "--headers-timeout-ms", "700", "--request-timeout-ms", "900", "--insecure-no-auth", "--servers-dir", "/s"];
  const { values } = parse(argv, configOptions());
  const config = configFrom(values);
  assert.deepEqual(
    [config.maxBodyBytes, config.headersTimeoutMs, config.requestTimeoutMs, config.insecureNoAuth, config.serversDir],
    [1024, 700, 900, true, "/s"],
  );
});

test("the README's Options table lists exactly every setting's flag and variable", async () => {
  const readme = await readFile(new URL("../../README.md", import.meta.url), "utf8");
  const table = /### Options\n\n([\s\S]*?)\n\n/.exec(readme)?.[1];
  assert.ok(table, "README has an Options table");
  const rows = table.split("\n").slice(2).map((row) => row.split(/(?<!\\)\|/).slice(1, 3));
  const named = (column: number, pattern: RegExp) => rows.flatMap((cells) => [...(cells[column] ?? "").matchAll(pattern)].map((m) => m[1]!)).sort();
  assert.deepEqual(named(0, /`--([a-z-]+)/g), CONFIG_KEYS.map(flagName).sort());
  assert.deepEqual(named(1, /`(MCPVISOR_[A-Z_]+)/g), CONFIG_KEYS.map(envName).sort());
});
