import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "./gateway.js";
import { parseManifest } from "./load.js";

const PATH = "/etc/mcpvisor/servers/net.json";
const base = { name: "net", source: { kind: "bundle", entry: "server.ts" }, command: "node", args: ["server.mjs"] };

function parse(network: unknown) {
  return parseManifest(PATH, JSON.stringify({ ...base, network }));
}

/** Refused with a ConfigError that names the file, then the field, then what is wrong with it. */
function assertRefused(network: unknown, field: string, reason: RegExp): void {
  assert.throws(() => parse(network), (err: Error) => {
    assert.ok(err instanceof ConfigError, `${err.name}: ${err.message}`);
    assert.ok(err.message.startsWith(`${PATH}: invalid server manifest: `), err.message);
    assert.ok(err.message.includes(` ${field}: `), `'${field}' in: ${err.message}`);
    assert.match(err.message, reason);
    return true;
  });
}

const github = { destination: "api.github.com:443", header: "Authorization", value: "Bearer ${GITHUB_TOKEN}" };

test("a network grant parses, with default limits and no credentials", () => {
  const manifest = parse({ allow: ["host.internal:5432", "public:443", "api.github.com:443", "*.example.com:443", "10.0.0.5:5432", "[fd00::5]:5432"] });
  assert.deepEqual(manifest.network, {
    allow: ["host.internal:5432", "public:443", "api.github.com:443", "*.example.com:443", "10.0.0.5:5432", "[fd00::5]:5432"],
    credentials: [],
    limits: { maxConnections: 32, maxBytesPerMinute: 256 * 1024 * 1024 },
  });
  assert.equal(parseManifest(PATH, JSON.stringify(base)).network, false, "no network by default");
  assert.equal(parse(false).network, false);
});

test("credentials and limits as written are kept; a credential's destination matches its allow entry however it is spelled", () => {
  const manifest = parse({
    allow: ["api.github.com:443", "*.example.com:443", "both.example.org:443"],
    credentials: [
      { ...github, destination: "API.GitHub.com:443" },
      { destination: "*.example.com:443", header: "X-Api-Key", value: "${file:/run/secrets/example}" },
      { destination: "both.example.org:443", header: "X-Both", value: "${A}:${file:/run/b}" },
    ],
    limits: { maxConnections: 4, maxBytesPerMinute: 1024 },
  });
  assert.ok(manifest.network);
  assert.equal(manifest.network.credentials.length, 3);
  assert.deepEqual(manifest.network.limits, { maxConnections: 4, maxBytesPerMinute: 1024 });
  const onlyOne = parse({ allow: ["api.github.com:443"], limits: { maxConnections: 2 } });
  assert.ok(onlyOne.network);
  assert.deepEqual(onlyOne.network.limits, { maxConnections: 2, maxBytesPerMinute: 256 * 1024 * 1024 });
});

test("a second credential for the same destination is refused", () => {
  assertRefused(
    { allow: ["api.github.com:443"], credentials: [github, { ...github, destination: "API.github.com:443", header: "X-Other" }] },
    "network.credentials.1.destination",
    /already has a credential; one per destination/,
  );
});

test("an allow entry of unknown syntax is refused, naming its index", () => {
  assertRefused({ allow: ["api.github.com:443", "api.github.com"] }, "network.allow.1", /'api\.github\.com' is not HOST:PORT \(a port is required/);
  assertRefused({ allow: ["https://api.github.com:443"] }, "network.allow.0", /is not HOST:PORT/);
  assertRefused({ allow: ["*.com:443"] }, "network.allow.0", /a wildcard needs a domain of at least two labels/);
  assertRefused({ allow: ["example.com:0"] }, "network.allow.0", /port 0 is outside 1-65535/);
  assertRefused({ allow: ["exa mple.com:443"] }, "network.allow.0", /is not a host name, an IP address, host\.internal or public/);
  assertRefused({ allow: [] }, "network.allow", /list at least one destination, or set network to false/);
  assertRefused({ allow: [443] }, "network.allow.0", /string/);
});

test("a credential for a destination not in allow, or for public, is refused", () => {
  assertRefused({ allow: ["api.github.com:443"], credentials: [{ ...github, destination: "uploads.github.com:443" }] }, "network.credentials.0.destination", /'uploads\.github\.com:443' is not in network\.allow/);
  assertRefused({ allow: ["api.github.com:443"], credentials: [github, { ...github, destination: "api.github.com:80" }] }, "network.credentials.1.destination", /'api\.github\.com:80' is not in network\.allow/);
  assertRefused({ allow: ["public:443"], credentials: [{ ...github, destination: "public:443" }] }, "network.credentials.0.destination", /a credential cannot go to `public`/);
  assertRefused({ allow: ["api.github.com:443"], credentials: [{ ...github, destination: "api.github.com" }] }, "network.credentials.0.destination", /is not HOST:PORT/);
});

test("a literal secret, or a header that is not a header name, is refused", () => {
  assertRefused({ allow: ["api.github.com:443"], credentials: [{ ...github, value: "Bearer ghp_literal" }] }, "network.credentials.0.value", /must reference a secret, e\.g\. "Bearer \$\{GITHUB_TOKEN\}"/);
  assertRefused({ allow: ["api.github.com:443"], credentials: [{ ...github, value: "Bearer $GITHUB_TOKEN" }] }, "network.credentials.0.value", /must reference a secret/);
  assertRefused({ allow: ["api.github.com:443"], credentials: [{ ...github, value: "${file:relative/path}" }] }, "network.credentials.0.value", /must reference a secret/);
  assertRefused({ allow: ["api.github.com:443"], credentials: [{ ...github, header: "Bad Header" }] }, "network.credentials.0.header", /an HTTP header name such as Authorization/);
  assertRefused({ allow: ["api.github.com:443"], credentials: [{ ...github, header: "X-Key:" }] }, "network.credentials.0.header", /an HTTP header name/);
  assertRefused({ allow: ["api.github.com:443"], credentials: [{ ...github, extra: 1 }] }, "network.credentials.0", /extra|Unrecognized/);
});

test("limits out of range, unknown fields and a true network are refused, naming the field", () => {
  assertRefused({ allow: ["api.github.com:443"], limits: { maxConnections: 0 } }, "network.limits.maxConnections", /1/);
  assertRefused({ allow: ["api.github.com:443"], limits: { maxBytesPerMinute: 10 } }, "network.limits.maxBytesPerMinute", /1024/);
  assertRefused({ allow: ["api.github.com:443"], ports: [443] }, "network", /ports|Unrecognized/);
  assert.throws(() => parse(true), (err: Error) => err instanceof ConfigError && err.message.startsWith(`${PATH}: `) && /network/.test(err.message));
});
