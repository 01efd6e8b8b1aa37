/**
 * The whole egress link without a VM: the agent's EgressLink and the gateway's VmEgressLink at the two
 * ends of a real TCP connection (standing in for the virtio-serial port), a real policy, and a real
 * TCP echo server reached as host.internal.
 */
import assert from "node:assert/strict";
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { once } from "node:events";
import type { ClientHttp2Stream } from "node:http2";
import * as net from "node:net";
import { after, test } from "node:test";
import type { Channel } from "../../sandbox/agent/channel.js";
import { EgressLink } from "../../sandbox/agent/egress/egress-link.js";
import { SYNC_PREFIX, syncLine } from "../../sandbox/agent/egress-protocol.js";
import { events, flushTelemetry, type EgressRecord } from "../telemetry/events.js";
import { createLogger } from "../telemetry/log.js";
import { ConnectionBudget } from "./limits.js";
import { EgressPolicy } from "./policy.js";
import { VmEgressLink } from "./vm-link.js";

const cleanups: (() => void)[] = [];
after(() => {
  for (const cleanup of cleanups.reverse()) cleanup();
});

/** A TCP echo server on 127.0.0.1: what host.internal:<port> reaches. */
const echoSockets = new Set<net.Socket>();
const echo = net.createServer((socket) => {
  echoSockets.add(socket);
  socket.on("close", () => echoSockets.delete(socket));
  socket.on("error", () => undefined);
  socket.pipe(socket);
});
echo.listen(0, "127.0.0.1");
await once(echo, "listening");
const ECHO_PORT = (echo.address() as net.AddressInfo).port;
cleanups.push(() => {
  for (const socket of echoSockets) socket.destroy();
  echo.close();
});

/** Both ends of one TCP connection: [the guest's end, the gateway's end]. */
async function socketPair(): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const accepted = once(server, "connection") as Promise<[net.Socket]>;
  const guest = net.connect((server.address() as net.AddressInfo).port, "127.0.0.1");
  const [[host]] = await Promise.all([accepted, once(guest, "connect")]);
  server.close();
  for (const socket of [guest, host]) socket.on("error", () => undefined);
  cleanups.push(() => {
    guest.destroy();
    host.destroy();
  });
  return [guest, host];
}

/**
 * The agent's Channel over a socket, as DeviceChannel behaves (reads wait for the consumer). Its host end
 * can be replaced, as the egress port's is when a snapshot resumes in a new QEMU process.
 */
class PortChannel implements Channel {
  private onChunk: ((chunk: Buffer) => Promise<void> | void) | undefined;

  constructor(private socket: net.Socket) {}

  start(onChunk: (chunk: Buffer) => Promise<void> | void): void {
    this.onChunk = onChunk;
    this.listen(this.socket);
  }

  /** The port's host end is now `socket`; nothing more is read from the old one. */
  reattach(socket: net.Socket): void {
    this.socket.removeAllListeners("data");
    this.socket = socket;
    this.listen(socket);
  }

  private listen(socket: net.Socket): void {
    socket.on("data", (chunk: Buffer) => {
      const result = this.onChunk?.(chunk);
      if (result) {
        socket.pause();
        void result.finally(() => socket.resume());
      }
    });
  }

  write(data: string | Buffer): Promise<void> {
    return new Promise<void>((resolve) => this.socket.write(data, () => resolve()));
  }

  pendingBytes(): number {
    return this.socket.writableLength;
  }

  flush(timeoutMs: number): Promise<void> {
    return Promise.race([this.write(""), new Promise<void>((resolve) => setTimeout(resolve, timeoutMs))]);
  }
}

interface LinkOptions {
  maxConnections?: number;
  maxBytesPerMinute?: number;
  budget?: ConnectionBudget;
}

/** The gateway's end of the port: a real policy allowing the echo server as host.internal. */
function gatewayOn(hostSocket: net.Socket, options: LinkOptions = {}): VmEgressLink {
  const limits = { maxConnections: options.maxConnections ?? 32, maxBytesPerMinute: options.maxBytesPerMinute ?? 1 << 30 };
  const policy = new EgressPolicy({ allow: [`host.internal:${ECHO_PORT}`, "api.example.com:443"], credentials: [], limits }, new Map(), {
    resolve: async (name) => {
      if (name === "api.example.com") return ["10.9.8.7"]; // a private address: rebinding, refused
      throw new Error(`${name} does not exist`);
    },
    gatewayPorts: new Set(),
    hostAddresses: new Set(),
  });
  const gateway = new VmEgressLink(hostSocket, {
    server: "pg",
    vm: "vm-test",
    policy,
    limits,
    budget: options.budget ?? new ConnectionBudget(64),
    upstream: {},
    leafFor: () => Promise.reject(new Error("no CA in this test")),
    log: createLogger("silent"),
  });
  cleanups.push(() => gateway.close());
  return gateway;
}

interface Setup {
  guest: EgressLink;
  gateway: VmEgressLink;
  channel: PortChannel;
  guestSocket: net.Socket;
  hostSocket: net.Socket;
}

async function setup(options: LinkOptions & { beforeGuest?: (guestSocket: net.Socket, hostSocket: net.Socket) => void } = {}): Promise<Setup> {
  const [guestSocket, hostSocket] = await socketPair();
  const gateway = gatewayOn(hostSocket, options);
  options.beforeGuest?.(guestSocket, hostSocket);
  const channel = new PortChannel(guestSocket);
  const guest = new EgressLink(channel);
  cleanups.push(() => guest.reset());
  return { guest, gateway, channel, guestSocket, hostSocket };
}

async function connect(guest: EgressLink, port = ECHO_PORT): Promise<ClientHttp2Stream> {
  const answer = await guest.connect("host.internal", port);
  assert.ok(answer.ok, `connect refused: ${answer.ok ? "" : answer.reason}`);
  return answer.stream;
}

/** Writes `text` on a tunnel and reads the same number of bytes back. */
async function roundTrip(stream: ClientHttp2Stream, text: string): Promise<string> {
  let received = "";
  const done = new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      received += chunk.toString("utf8");
      if (received.length >= text.length) {
        stream.off("data", onData);
        resolve();
      }
    };
    stream.on("data", onData);
    stream.once("error", reject);
  });
  stream.write(text);
  await done;
  return received;
}

async function until(condition: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Egress records published while `body` runs (and flushed after it). */
async function recording(body: () => Promise<void>): Promise<EgressRecord[]> {
  const seen: EgressRecord[] = [];
  const onRecord = (message: unknown) => seen.push(message as EgressRecord);
  subscribe(events.egress.name, onRecord);
  try {
    await body();
    flushTelemetry();
  } finally {
    unsubscribe(events.egress.name, onRecord);
  }
  return seen;
}

test("host.internal resolves to 10.0.2.2, a tunnel to it echoes, and its end is recorded with its bytes", { timeout: 20_000 }, async () => {
  const { guest, gateway } = await setup();
  assert.deepEqual(await guest.resolve("host.internal"), { ok: true, address: "10.0.2.2" });
  assert.deepEqual(await guest.resolve("HOST.INTERNAL"), { ok: true, address: "10.0.2.2" });

  const records = await recording(async () => {
    const stream = await connect(guest);
    assert.equal(gateway.openConnections(), 1);
    assert.equal(await roundTrip(stream, "hello through egress"), "hello through egress");
    const big = "x".repeat(256 * 1024);
    assert.equal((await roundTrip(stream, big)).length, big.length, "more than one frame's worth, both ways");
    stream.end();
    await until(() => gateway.openConnections() === 0, "the tunnel to close on the gateway");
    await until(() => echoSockets.size === 0, "the upstream connection to close");
  });
  const ended = records.find((r) => r.kind === "tunnel");
  assert.ok(ended, JSON.stringify(records));
  assert.equal(ended.outcome, "ok");
  assert.equal(ended.server, "pg");
  assert.equal(ended.vm, "vm-test");
  assert.equal(ended.destination, `host.internal:${ECHO_PORT}`);
  assert.equal(ended.target, `host.internal:${ECHO_PORT}`);
  assert.equal(ended.bytesOut, 20 + 256 * 1024);
  assert.equal(ended.bytesIn, 20 + 256 * 1024);
});

test("refusals answer ok:false with the policy's reason, and are recorded as refused", { timeout: 20_000 }, async () => {
  const { guest, gateway } = await setup();
  const otherPort = ECHO_PORT === 65535 ? 1 : ECHO_PORT + 1;
  let unlisted: Awaited<ReturnType<EgressLink["connect"]>> | undefined;
  let dns: Awaited<ReturnType<EgressLink["resolve"]>> | undefined;
  let rebound: Awaited<ReturnType<EgressLink["resolve"]>> | undefined;
  const records = await recording(async () => {
    unlisted = await guest.connect("host.internal", otherPort);
    dns = await guest.resolve("evil.example.net");
    rebound = await guest.resolve("api.example.com");
  });
  assert.deepEqual(unlisted, { ok: false, reason: `host.internal:${otherPort} is not in network.allow` });
  assert.deepEqual(dns, { ok: false, reason: "evil.example.net is not in network.allow" });
  assert.equal(rebound?.ok, false);
  assert.match(rebound.ok ? "" : rebound.reason, /api\.example\.com resolves to 10\.9\.8\.7.*DNS rebinding is refused/);
  assert.equal(gateway.openConnections(), 0, "a refused tunnel holds no slot");

  const tunnel = records.find((r) => r.kind === "tunnel");
  assert.ok(tunnel, JSON.stringify(records));
  assert.equal(tunnel.outcome, "refused");
  assert.equal(tunnel.destination, "unlisted");
  assert.equal(tunnel.target, `host.internal:${otherPort}`);
  assert.equal(tunnel.reason, `host.internal:${otherPort} is not in network.allow`);
  const names = records.filter((r) => r.kind === "dns");
  assert.deepEqual(
    names.map((r) => [r.outcome, r.destination, r.target]),
    [
      ["refused", "unlisted", "evil.example.net"],
      ["refused", "api.example.com:443", "api.example.com"],
    ],
  );

  // The session survives refusals: the next tunnel works.
  const stream = await connect(guest);
  assert.equal(await roundTrip(stream, "still here"), "still here");
  stream.close();
});

test("network.limits.maxConnections: a tunnel past the limit is refused, and a slot frees when one closes", { timeout: 20_000 }, async () => {
  const { guest, gateway } = await setup({ maxConnections: 2 });
  const first = await connect(guest);
  const second = await connect(guest);
  assert.equal(await roundTrip(second, "two"), "two");
  const third = await guest.connect("host.internal", ECHO_PORT);
  assert.equal(third.ok, false);
  assert.match(third.ok ? "" : third.reason, /the sandbox has 2 connections open \(network\.limits\.maxConnections\)/);
  assert.equal(gateway.openConnections(), 2);

  first.close();
  await until(() => gateway.openConnections() === 1, "the closed tunnel's slot to free");
  const fourth = await connect(guest);
  assert.equal(await roundTrip(fourth, "four"), "four");
  assert.equal(gateway.openConnections(), 2);
  second.close();
  fourth.close();
  await until(() => gateway.openConnections() === 0, "every slot to free");
});

test("network.limits.maxBytesPerMinute: once a sandbox moved that much this minute, new tunnels are refused", { timeout: 20_000 }, async () => {
  const { guest } = await setup({ maxBytesPerMinute: 4096 });
  const first = await connect(guest);
  const text = "x".repeat(3000);
  assert.equal(await roundTrip(first, text), text, "3000 bytes out and 3000 back: 6000 counted");
  const next = await guest.connect("host.internal", ECHO_PORT);
  assert.equal(next.ok, false);
  assert.match(next.ok ? "" : next.reason, /moved 4096 bytes this minute \(network\.limits\.maxBytesPerMinute\)/);
  first.close();
});

test("the gateway-wide budget (egressMaxConnections) refuses a tunnel past it, across links", { timeout: 20_000 }, async () => {
  const budget = new ConnectionBudget(1);
  const a = await setup({ budget });
  const b = await setup({ budget });
  const held = await connect(a.guest);
  assert.equal(budget.used, 1);
  for (const link of [a.guest, b.guest]) {
    const refused = await link.connect("host.internal", ECHO_PORT);
    assert.equal(refused.ok, false);
    assert.match(refused.ok ? "" : refused.reason, /the gateway has 1 egress connections open \(egressMaxConnections\)/);
  }
  assert.equal(budget.used, 1, "a refusal takes nothing from the budget");
  held.close();
  await until(() => budget.used === 0, "the budget to be given back");
  const other = await connect(b.guest);
  assert.equal(await roundTrip(other, "b"), "b");
  other.close();
  await until(() => budget.used === 0, "the budget to be given back");
});

test("stale bytes before either side's sync line are skipped", { timeout: 20_000 }, async () => {
  let injected = false;
  const { guest } = await setup({
    beforeGuest(guestSocket, hostSocket) {
      // Left in the port by an old session: bytes, an HTTP/2 preface and a sync line that is not one.
      void guestSocket.write(`garbage \x00\x01\x02 PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n${SYNC_PREFIX}bad!\n${SYNC_PREFIX.slice(0, 5)}`);
      // Toward the guest, after its sync line and before the gateway's answer: an old session's bytes
      // and sync line (another nonce), which the agent must not take for its own.
      hostSocket.prependListener("data", (chunk: Buffer) => {
        if (injected || !chunk.includes(SYNC_PREFIX)) return;
        injected = true;
        hostSocket.write(Buffer.concat([Buffer.from([0, 0, 4, 8, 0, 0, 0, 0, 0]), Buffer.from(`stale ${syncLine("0123456789abcdef0123")}more stale`)]));
      });
    },
  });
  assert.deepEqual(await guest.resolve("host.internal"), { ok: true, address: "10.0.2.2" });
  assert.ok(injected, "the stale answer went out before the gateway's");
  const stream = await connect(guest);
  assert.equal(await roundTrip(stream, "after the noise"), "after the noise");
  stream.close();
});

test("reset (what the agent does on resume) destroys open tunnels, and the next use opens a new session with the new QEMU's link", { timeout: 20_000 }, async () => {
  const { guest, gateway, channel } = await setup();
  const before = await connect(guest);
  assert.equal(await roundTrip(before, "before"), "before");

  // A clone resumes in another QEMU process: the guest's port now reaches a new gateway link, and the
  // old session (still in the guest's memory) writes a few bytes into it before the agent is told.
  const [guestSocket, hostSocket] = await socketPair();
  const resumed = gatewayOn(hostSocket);
  gateway.close();
  channel.reattach(guestSocket);
  before.write("bytes of the old session");
  guest.reset();
  assert.ok(before.destroyed, "the open tunnel is gone at once");

  const after = await connect(guest);
  assert.equal(await roundTrip(after, "after"), "after");
  assert.deepEqual(await guest.resolve("host.internal"), { ok: true, address: "10.0.2.2" });
  assert.equal(resumed.openConnections(), 1);
  after.close();
  await until(() => resumed.openConnections() === 0 && gateway.openConnections() === 0, "every tunnel to be released");
  await until(() => echoSockets.size === 0, "every upstream connection to close");
});

test(
  "reset on a link whose gateway session is still alive (no resume came between): no hang, and the link recovers",
  { timeout: 30_000 },
  async () => {
    const { guest } = await setup();
    const before = await connect(guest);
    assert.equal(await roundTrip(before, "before"), "before");
    guest.reset();
    // The new sync line lands in the gateway's old HTTP/2 session, which fails on it and looks for the
    // next one. Depending on how the bytes are cut, that line itself is found or lost; if lost, the
    // agent's sync times out after 5 s (an error, not a hang) and its next use syncs.
    for (let attempt = 1; ; attempt++) {
      const t0 = Date.now();
      const answer = await guest.connect("host.internal", ECHO_PORT);
      if (answer.ok) {
        assert.equal(await roundTrip(answer.stream, "after"), "after");
        answer.stream.close();
        return;
      }
      assert.match(answer.reason, /did not answer the egress sync line within 5000 ms/);
      assert.ok(Date.now() - t0 < 8_000, "a failed sync is reported, not waited on forever");
      assert.ok(attempt < 2, "the second attempt syncs");
    }
  },
);
