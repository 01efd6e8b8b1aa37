import assert from "node:assert/strict";
import { test } from "node:test";
import { isPublicAddress } from "./address-class.js";
import { DestinationSyntaxError, parseDestination } from "./destination.js";
import { EgressPolicy, HOST_INTERNAL_GUEST_ADDRESS, UNLISTED, type Credential, type HostFacts, type Verdict } from "./policy.js";

/** The host facts a policy takes: names resolve from a fixed table (a name not in it does not exist). */
function facts(names: Record<string, string[]>, more: Partial<Omit<HostFacts, "resolve">> = {}): HostFacts & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    async resolve(name) {
      asked.push(name);
      const addresses = names[name];
      if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${name}`), { code: "ENOTFOUND" });
      return addresses;
    },
    gatewayPorts: more.gatewayPorts ?? new Set(),
    hostAddresses: more.hostAddresses ?? new Set(),
  };
}

function policy(allow: string[], host: HostFacts, credentials: Record<string, Credential> = {}): EgressPolicy {
  return new EgressPolicy(
    { allow, credentials: [], limits: { maxConnections: 32, maxBytesPerMinute: 1 << 28 } },
    new Map(Object.entries(credentials)),
    host,
  );
}

function assertAllowed(verdict: Verdict, expected: { label: string; address: string; host?: string }, message?: string): void {
  assert.ok(verdict.allowed, `${message ?? "expected an allowed verdict"}: ${verdict.allowed ? "" : verdict.reason}`);
  assert.equal(verdict.label, expected.label, message);
  assert.equal(verdict.address, expected.address, message);
  if (expected.host !== undefined) assert.equal(verdict.host, expected.host, message);
}

function assertRefused(verdict: Verdict, label: string, reason: RegExp, message?: string): void {
  assert.equal(verdict.allowed, false, `${message ?? "expected a refusal"}: allowed to ${verdict.allowed ? verdict.address : ""}`);
  if (verdict.allowed) return;
  assert.equal(verdict.label, label, message);
  assert.match(verdict.reason, reason, message);
}

test("parseDestination accepts every documented form and gives each its label", () => {
  const cases: [string, ReturnType<typeof parseDestination>][] = [
    ["host.internal:5432", { kind: "host", port: 5432, label: "host.internal:5432" }],
    ["HOST.Internal:5432", { kind: "host", port: 5432, label: "host.internal:5432" }],
    ["public:443", { kind: "public", port: 443, label: "public:443" }],
    ["api.github.com:443", { kind: "name", name: "api.github.com", port: 443, label: "api.github.com:443" }],
    ["API.GitHub.com.:443", { kind: "name", name: "api.github.com", port: 443, label: "api.github.com:443" }],
    ["localhost:80", { kind: "name", name: "localhost", port: 80, label: "localhost:80" }],
    [" db-1.example.org:5432 ", { kind: "name", name: "db-1.example.org", port: 5432, label: "db-1.example.org:5432" }],
    ["*.example.com:443", { kind: "wildcard", suffix: "example.com", port: 443, label: "*.example.com:443" }],
    ["10.0.0.5:5432", { kind: "address", address: "10.0.0.5", port: 5432, label: "10.0.0.5:5432" }],
    ["[fd00::5]:5432", { kind: "address", address: "fd00::5", port: 5432, label: "[fd00::5]:5432" }],
    ["[2606:4700::1111]:1", { kind: "address", address: "2606:4700::1111", port: 1, label: "[2606:4700::1111]:1" }],
    ["example.com:65535", { kind: "name", name: "example.com", port: 65535, label: "example.com:65535" }],
  ];
  for (const [text, expected] of cases) assert.deepEqual(parseDestination(text), expected, text);
});

test("parseDestination refuses what is not HOST:PORT, saying what is wrong", () => {
  const cases: [string, RegExp][] = [
    ["api.github.com", /'api\.github\.com' is not HOST:PORT \(a port is required/],
    ["api.github.com:", /is not HOST:PORT/],
    ["api.github.com:https", /is not HOST:PORT/],
    ["example.com:0", /port 0 is outside 1-65535/],
    ["example.com:70000", /port 70000 is outside 1-65535/],
    ["*.com:443", /a wildcard needs a domain of at least two labels after '\*\.'/],
    ["*.:443", /is not a host name/],
    ["*.*.example.com:443", /a wildcard needs a domain/],
    ["exa mple.com:443", /'exa mple\.com' is not a host name, an IP address, host\.internal or public/],
    ["http://x:1", /is not HOST:PORT/],
    ["https://api.github.com:443", /is not HOST:PORT/],
    ["[not-v6]:443", /\[not-v6\] is not an IPv6 address/],
    ["[10.0.0.1]:443", /is not an IPv6 address/],
    ["fd00::5:5432", /is not HOST:PORT/],
    ["under_score.example.com:443", /is not a host name/],
    ["-dash.example.com:443", /is not a host name/],
    ["", /is not HOST:PORT/],
  ];
  for (const [text, reason] of cases) {
    assert.throws(() => parseDestination(text), (err: Error) => {
      assert.ok(err instanceof DestinationSyntaxError, `${text}: ${err.name}`);
      assert.match(err.message, reason, text);
      return true;
    });
  }
});

test("a listed name resolving to a public address is allowed to that very address, on the listed port only", async () => {
  const host = facts({ "api.github.com": ["140.82.112.5", "140.82.112.6"] });
  const p = policy(["api.github.com:443"], host);
  assert.deepEqual(p.ports, [443]);

  const verdict = await p.decide("API.GitHub.com.", 443);
  assertAllowed(verdict, { label: "api.github.com:443", address: "140.82.112.5", host: "api.github.com" });
  assert.equal(verdict.allowed && verdict.port, 443);
  assert.equal(verdict.allowed && verdict.credential, undefined);
  assert.deepEqual(host.asked, ["api.github.com"], "resolved once, and the verdict carries the address checked");

  assertRefused(await p.decide("api.github.com", 80), UNLISTED, /api\.github\.com:80 is not in network\.allow/);
  assertRefused(await p.decide("example.com", 443), UNLISTED, /example\.com:443 is not in network\.allow/);
  assertRefused(await p.decide("not a name", 443), UNLISTED, /not in network\.allow/);
  assert.deepEqual(host.asked, ["api.github.com"], "nothing unlisted is looked up on the host");
});

test("a wildcard covers names under its domain at any depth, not the domain itself", async () => {
  const public1 = ["93.184.216.34"];
  const p = policy(["*.example.com:443"], facts({ "sub.example.com": public1, "a.b.example.com": public1, "example.com": public1, "badexample.com": public1 }));
  assertAllowed(await p.decide("sub.example.com", 443), { label: "*.example.com:443", address: "93.184.216.34" });
  assertAllowed(await p.decide("a.b.example.com", 443), { label: "*.example.com:443", address: "93.184.216.34" });
  assertRefused(await p.decide("example.com", 443), UNLISTED, /not in network\.allow/);
  assertRefused(await p.decide("badexample.com", 443), UNLISTED, /not in network\.allow/);
  assertRefused(await p.decide("sub.example.com", 80), UNLISTED, /not in network\.allow/);

  assert.deepEqual(await p.answerName("a.b.example.com"), { ok: true, address: "93.184.216.34" });
  assert.equal((await p.answerName("example.com")).ok, false);
});

test("DNS rebinding: a listed name resolving to a non-public address is refused, with the addresses in the reason", async () => {
  const rebound = ["10.1.2.3", "127.0.0.1", "169.254.169.254", "100.64.0.7", "172.16.5.4", "192.168.1.1", "0.0.0.0", "::1", "fd00::1", "fe80::1", "::ffff:10.0.0.1", "64:ff9b::a00:1"];
  for (const address of rebound) {
    const p = policy(["evil.example.com:443", "*.rebind.test:443"], facts({ "evil.example.com": [address], "x.rebind.test": [address] }));
    assertRefused(await p.decide("evil.example.com", 443), "evil.example.com:443", /resolves to .*which network\.allow does not grant on port 443 \(DNS rebinding is refused\)/, address);
    assertRefused(await p.decide("x.rebind.test", 443), "*.rebind.test:443", /DNS rebinding is refused/, address);
    const answer = await p.answerName("evil.example.com");
    assert.equal(answer.ok, false, address);
    // A name with IPv6 addresses only is refused for that reason first: guests reach IPv4 only.
    assert.match(answer.ok ? "" : answer.reason, /DNS rebinding is refused|IPv6 addresses only/, address);
  }
  // Every address is checked, and the first one allowed is the one connected to: a private one first
  // does not hide a public one behind it, and a public one first is not followed by a private one.
  const p = policy(["mixed.example.com:443"], facts({ "mixed.example.com": ["10.0.0.1", "93.184.216.34"] }));
  assertAllowed(await p.decide("mixed.example.com", 443), { label: "mixed.example.com:443", address: "93.184.216.34" });
  assert.deepEqual(await p.answerName("mixed.example.com"), { ok: true, address: "93.184.216.34" });
});

test("a listed name may resolve to a private address that is itself listed on that port, or to loopback with host.internal on that port", async () => {
  const host = facts({ "db.corp.example": ["10.0.0.5"], "other.corp.example": ["10.0.0.6"], "local.example": ["127.0.0.1"], "local6.example": ["::1"] });
  const p = policy(["db.corp.example:5432", "10.0.0.5:5432", "other.corp.example:5432", "local.example:8080", "local6.example:8080", "host.internal:8080", "db.corp.example:6432"], host);
  assertAllowed(await p.decide("db.corp.example", 5432), { label: "db.corp.example:5432", address: "10.0.0.5" });
  assertRefused(await p.decide("db.corp.example", 6432), "db.corp.example:6432", /DNS rebinding/, "the address is listed on another port only");
  assertRefused(await p.decide("other.corp.example", 5432), "other.corp.example:5432", /resolves to 10\.0\.0\.6/, "another private address is not");
  assertAllowed(await p.decide("local.example", 8080), { label: "local.example:8080", address: "127.0.0.1" });
  assertAllowed(await p.decide("local6.example", 8080), { label: "local6.example:8080", address: "::1" });
  assert.deepEqual(await p.answerName("db.corp.example"), { ok: true, address: "10.0.0.5" });

  const withoutHost = policy(["local.example:8080"], host);
  assertRefused(await withoutHost.decide("local.example", 8080), "local.example:8080", /DNS rebinding/);
  const hostOtherPort = policy(["local.example:8080", "host.internal:5432"], host);
  assertRefused(await hostOtherPort.decide("local.example", 8080), "local.example:8080", /DNS rebinding/);
});

test("public covers public addresses only: never private ones, the host's own, nor the metadata address", async () => {
  const host = facts(
    { "example.org": ["93.184.216.34"], "intranet.example": ["192.168.0.10"], "self.example": ["34.120.1.2"], "metadata.example": ["169.254.169.254"] },
    { hostAddresses: new Set(["34.120.1.2", "2600:1900:4000::1"]) },
  );
  const p = policy(["public:443"], host);
  assertAllowed(await p.decide("example.org", 443), { label: "public:443", address: "93.184.216.34", host: "example.org" });
  assert.deepEqual(await p.answerName("example.org"), { ok: true, address: "93.184.216.34" });
  assertRefused(await p.decide("example.org", 80), UNLISTED, /not in network\.allow/);
  assertRefused(await p.decide("intranet.example", 443), "public:443", /resolves to 192\.168\.0\.10/);
  assertRefused(await p.decide("self.example", 443), "public:443", /resolves to 34\.120\.1\.2/);
  assertRefused(await p.decide("metadata.example", 443), "public:443", /DNS rebinding/);
  assert.equal((await p.answerName("self.example")).ok, false);

  // IP literals (what the HTTP proxy's CONNECT can carry).
  assertAllowed(await p.decide("8.8.8.8", 443), { label: "public:443", address: "8.8.8.8" });
  assertAllowed(await p.decide("2606:4700:4700::1111", 443), { label: "public:443", address: "2606:4700:4700::1111" });
  for (const literal of ["169.254.169.254", "10.0.0.1", "127.0.0.1", "::1", "fd00::1", "::ffff:169.254.169.254", "34.120.1.2", "2600:1900:4000::1"]) {
    assertRefused(await p.decide(literal, 443), UNLISTED, /is not in network\.allow/, literal);
  }
  const onPort80 = policy(["public:80"], host);
  assertRefused(await onPort80.decide("169.254.169.254", 80), UNLISTED, /169\.254\.169\.254:80 is not in network\.allow/);
});

test("public never reaches the host's own IPv6 address, however the address is written", async () => {
  const p = policy(["public:443"], facts({}, { hostAddresses: new Set(["2600:1900:4000::1"]), gatewayPorts: new Set([443]) }));
  for (const literal of ["2600:1900:4000:0::1", "2600:1900:4000:0:0:0:0:1", "2600:1900:4000::0001", "2600:1900:4000::0:1"]) {
    assertRefused(await p.decide(literal, 443), UNLISTED, /is not in network\.allow/, literal);
  }
  const listed = policy(["[2606:4700:4700::1111]:443"], facts({}));
  assertAllowed(await listed.decide("2606:4700:4700:0:0:0:0:1111", 443), { label: "[2606:4700:4700::1111]:443", address: "2606:4700:4700::1111" });
  const upper = policy(["[2606:4700:4700:0::1111]:443"], facts({ "one.example": ["2606:4700:4700::1111"] }));
  assert.equal(parseDestination("[2606:4700:4700:0::1111]:443").label, "[2606:4700:4700::1111]:443", "an IPv6 entry's label is its canonical form");
  assertAllowed(await upper.decide("2606:4700:4700::1111", 443), { label: "[2606:4700:4700::1111]:443", address: "2606:4700:4700::1111" });
});

test("IP literals are refused unless listed (on that port) or public under public:PORT", async () => {
  const p = policy(["10.0.0.5:5432", "[fd00::5]:5432"], facts({}));
  assertAllowed(await p.decide("10.0.0.5", 5432), { label: "10.0.0.5:5432", address: "10.0.0.5", host: "10.0.0.5" });
  assertAllowed(await p.decide("fd00::5", 5432), { label: "[fd00::5]:5432", address: "fd00::5" });
  assertRefused(await p.decide("10.0.0.5", 5433), UNLISTED, /10\.0\.0\.5:5433 is not in network\.allow/);
  assertRefused(await p.decide("10.0.0.6", 5432), UNLISTED, /10\.0\.0\.6:5432 is not in network\.allow/);
  assertRefused(await p.decide("8.8.8.8", 5432), UNLISTED, /not in network\.allow/, "a public address is not listed without public:PORT");
  assertRefused(await p.decide(HOST_INTERNAL_GUEST_ADDRESS, 5432), UNLISTED, /not in network\.allow/, "10.0.2.2 is not host.internal when dialled directly");
  assert.equal((await p.answerName("10.0.0.5")).ok, false, "DNS answers names, not literals");
});

test("host.internal: only on its listed ports, always to 127.0.0.1, never to the gateway's own port", async () => {
  const host = facts({ "host.internal": ["203.0.113.9"] }, { gatewayPorts: new Set([8443]) });
  const p = policy(["host.internal:5432", "host.internal:8443"], host);
  assert.deepEqual(p.ports, [5432, 8443]);
  assertAllowed(await p.decide("host.internal", 5432), { label: "host.internal:5432", address: "127.0.0.1", host: "host.internal" });
  assertAllowed(await p.decide("Host.Internal.", 5432), { label: "host.internal:5432", address: "127.0.0.1" });
  assertRefused(await p.decide("host.internal", 5433), UNLISTED, /host\.internal:5433 is not in network\.allow/);
  assertRefused(await p.decide("host.internal", 8443), "host.internal:8443", /host\.internal:8443 is the gateway's own port, which no sandbox may reach/);
  assertRefused(await p.decide("127.0.0.1", 5432), UNLISTED, /not in network\.allow/, "the loopback literal is not host.internal");
  assert.deepEqual(host.asked, [], "host.internal is never resolved");

  assert.deepEqual(await p.answerName("host.internal"), { ok: true, address: HOST_INTERNAL_GUEST_ADDRESS });
  assert.deepEqual(await p.answerName("HOST.INTERNAL."), { ok: true, address: "10.0.2.2" });
  const none = policy(["api.github.com:443"], host);
  assert.deepEqual(await none.answerName("host.internal"), { ok: false, label: UNLISTED, reason: "host.internal is not in network.allow" });
  assertRefused(await none.decide("host.internal", 5432), UNLISTED, /not in network\.allow/);
});

test("the gateway's own ports are refused on the host's addresses whatever grants them", async () => {
  const host = facts({ "me.example": ["34.120.1.2"], "loop.example": ["127.0.0.1"] }, { gatewayPorts: new Set([8443]), hostAddresses: new Set(["34.120.1.2"]) });
  const p = policy(["34.120.1.2:8443", "loop.example:8443", "host.internal:8443"], host);
  assertRefused(await p.decide("34.120.1.2", 8443), "34.120.1.2:8443", /gateway's own port/);
  assertRefused(await p.decide("loop.example", 8443), "loop.example:8443", /gateway's own port/);
});

test("a credential rides on the verdict of its own destination only", async () => {
  const token: Credential = { header: "Authorization", value: "Bearer s3cret-token-value" };
  const key: Credential = { header: "X-Api-Key", value: "k3y-value-123456" };
  const host = facts({ "api.github.com": ["140.82.112.5"], "uploads.example.com": ["93.184.216.34"], "example.org": ["93.184.216.35"] });
  const p = policy(["api.github.com:443", "*.example.com:443", "public:443", "api.github.com:80"], host, { "api.github.com:443": token, "*.example.com:443": key });
  const github = await p.decide("api.github.com", 443);
  assertAllowed(github, { label: "api.github.com:443", address: "140.82.112.5" });
  assert.deepEqual(github.allowed && github.credential, token);
  const uploads = await p.decide("uploads.example.com", 443);
  assert.deepEqual(uploads.allowed && uploads.credential, key);
  const other = await p.decide("example.org", 443);
  assertAllowed(other, { label: "public:443", address: "93.184.216.35" });
  assert.equal(other.allowed && other.credential, undefined);
  const plain = await p.decide("api.github.com", 80);
  assertAllowed(plain, { label: "api.github.com:80", address: "140.82.112.5" });
  assert.equal(plain.allowed && plain.credential, undefined, "same name, another port: another destination");
  const literal = await p.decide("140.82.112.5", 443);
  assertAllowed(literal, { label: "public:443", address: "140.82.112.5" });
  assert.equal(literal.allowed && literal.credential, undefined, "the address of a credentialed name is not that name");
});

test("a name's own entry takes precedence over a wildcard that also covers it, in whatever order they are listed", async () => {
  const token: Credential = { header: "Authorization", value: "Bearer s3cret-token-value" };
  const host = facts({ "api.example.com": ["93.184.216.34"] });
  for (const allow of [["*.example.com:443", "api.example.com:443"], ["api.example.com:443", "*.example.com:443"]]) {
    const p = policy(allow, host, { "api.example.com:443": token });
    const verdict = await p.decide("api.example.com", 443);
    assertAllowed(verdict, { label: "api.example.com:443", address: "93.184.216.34" }, allow.join(", "));
    assert.deepEqual(verdict.allowed && verdict.credential, token, allow.join(", "));
  }
});

test("answerName refuses unlisted names and names that do not resolve, with a reason", async () => {
  const host = facts({ "api.github.com": ["140.82.112.5"], "v6only.example.com": ["2606:4700::1"] });
  const p = policy(["api.github.com:443", "gone.example.com:443", "v6only.example.com:443"], host);
  assert.deepEqual(await p.answerName("api.github.com"), { ok: true, address: "140.82.112.5" });
  assert.deepEqual(await p.answerName("evil.example.net"), { ok: false, label: UNLISTED, reason: "evil.example.net is not in network.allow" });
  assert.deepEqual(await p.answerName("bad name"), { ok: false, label: UNLISTED, reason: "bad name is not in network.allow" });
  assert.deepEqual(await p.answerName("gone.example.com"), { ok: false, label: "gone.example.com:443", reason: "gone.example.com does not resolve" });
  assertRefused(await p.decide("gone.example.com", 443), "gone.example.com:443", /^gone\.example\.com does not resolve$/);
  assert.equal((await p.answerName("v6only.example.com")).ok, false, "the guest is given IPv4 addresses only");
  assert.deepEqual(host.asked, ["api.github.com", "gone.example.com", "gone.example.com", "v6only.example.com"]);

  const empty = policy(["empty.example.com:443"], { ...facts({}), resolve: async () => [] });
  assertRefused(await empty.decide("empty.example.com", 443), "empty.example.com:443", /does not resolve/, "no addresses is no answer");
});

test("isPublicAddress", () => {
  const table: [string, boolean][] = [
    ["8.8.8.8", true],
    ["1.1.1.1", true],
    ["93.184.216.34", true],
    ["172.15.255.255", true],
    ["172.32.0.1", true],
    ["100.63.255.255", true],
    ["100.128.0.1", true],
    ["11.0.0.1", true],
    ["2606:4700:4700::1111", true],
    ["2001:4860:4860::8888", true],
    ["0.0.0.0", false],
    ["10.0.0.1", false],
    ["10.255.255.255", false],
    ["100.64.0.1", false],
    ["100.127.255.255", false],
    ["127.0.0.1", false],
    ["127.255.255.254", false],
    ["169.254.169.254", false],
    ["169.254.0.1", false],
    ["172.16.0.1", false],
    ["172.31.255.255", false],
    ["192.0.0.8", false],
    ["192.0.2.1", false],
    ["192.168.1.1", false],
    ["198.18.0.1", false],
    ["198.19.255.255", false],
    ["198.51.100.7", false],
    ["203.0.113.1", false],
    ["224.0.0.1", false],
    ["239.255.255.250", false],
    ["240.0.0.1", false],
    ["255.255.255.255", false],
    ["::", false],
    ["::1", false],
    ["::ffff:8.8.8.8", false],
    ["::ffff:10.0.0.1", false],
    ["::ffff:169.254.169.254", false],
    ["64:ff9b::808:808", false],
    ["100::1", false],
    ["2001:db8::1", false],
    ["fc00::1", false],
    ["fd00::1", false],
    ["fe80::1", false],
    ["ff02::1", false],
    ["FD00::1", false],
    ["example.com", false],
    ["", false],
    ["10.0.0", false],
  ];
  for (const [address, expected] of table) assert.equal(isPublicAddress(address), expected, address);
});
