import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { createConnection, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { AGENT_PROTOCOL_VERSION, encodeFrame, type GuestFrame } from "../../../sandbox/agent/protocol.js";
import { AgentProtocolError } from "../errors.js";
import { AgentChannel } from "./agent-channel.js";

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "mcpv-agent-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A connected pair over a unix socket: the host's end (for AgentChannel) and the guest agent's. */
async function socketPair(): Promise<{ host: Socket; guest: Socket }> {
  const path = join(dir, `s-${Math.random().toString(36).slice(2)}`);
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const accepted = new Promise<Socket>((resolve) => server.once("connection", resolve));
  const host = createConnection(path);
  const guest = await accepted;
  server.close();
  return { host, guest };
}

const hello = (v: number): GuestFrame => ({ t: "hello", v: v as typeof AGENT_PROTOCOL_VERSION, kernel: "6.1.0", servers: { memory: 7 }, uptimeMs: 1 });

test("a hello of this protocol version is the boot's hello", async () => {
  const { host, guest } = await socketPair();
  const channel = new AgentChannel(host);
  guest.write(encodeFrame(hello(AGENT_PROTOCOL_VERSION)));
  assert.equal((await channel.waitForHello(5_000)).kernel, "6.1.0");
  channel.close();
  guest.destroy();
});

test("a hello of another protocol version fails the boot, naming both versions", async () => {
  const { host, guest } = await socketPair();
  const channel = new AgentChannel(host);
  guest.write(encodeFrame(hello(AGENT_PROTOCOL_VERSION + 1)));
  await assert.rejects(channel.waitForHello(5_000), (err: Error) => {
    assert.ok(err instanceof AgentProtocolError);
    assert.match(err.message, new RegExp(`version ${AGENT_PROTOCOL_VERSION + 1}, this gateway version ${AGENT_PROTOCOL_VERSION}`));
    return true;
  });
  guest.destroy();
});

test("the agent's error frames reach the listener, and the channel goes on", async () => {
  const { host, guest } = await socketPair();
  const reported: string[] = [];
  const channel = new AgentChannel(host, (message) => reported.push(message));
  guest.write(encodeFrame({ t: "error", message: "frame is not a JSON object" }));
  guest.write(encodeFrame(hello(AGENT_PROTOCOL_VERSION)));
  await channel.waitForHello(5_000);
  assert.deepEqual(reported, ["frame is not a JSON object"]);
  channel.close();
  guest.destroy();
});
