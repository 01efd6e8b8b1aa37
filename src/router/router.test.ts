import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import { McpError, type CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { eventually, fakeManifest, fakePool } from "../sandbox/pool.fixture.js";
import type { FaultInjectingDriver } from "../sandbox/fault-injecting-driver.js";
import type { Vm } from "../sandbox/driver.js";
import type { SandboxPool } from "../sandbox/pool.js";
import { createLogger } from "../telemetry/log.js";
import { SuspendStore } from "../sandbox/suspend-store.js";
import { AGGREGATE, Router, type Route } from "./router.js";
import { savedRefOf, SessionStore } from "./session-store.js";

/** The router over a pool on the FaultInjectingDriver (no image, no QEMU), reached by a real SDK client in memory. */
describe("router (FaultInjectingDriver, no image)", () => {
  let pool: SandboxPool;
  let driver: FaultInjectingDriver;
  let vms: Vm[];
  let router: Router;

  before(async () => {
    ({ pool, driver, vms } = await fakePool([fakeManifest(), fakeManifest({ name: "slow", timeouts: { callMs: 150, idleSuspendMs: 0 } })]));
    router = new Router(pool, createLogger("silent"));
  });
  after(async () => {
    await router.close();
    await pool.close();
  });

  async function open(route: Route): Promise<Client> {
    const [client, server] = InMemoryTransport.createLinkedPair();
    await router.connect(route, server, "in-memory");
    const sdk = new Client({ name: "router-test", version: "0" });
    await sdk.connect(client);
    return sdk;
  }

  const text = (result: unknown) => ((result as CallToolResult).content[0] as { text: string }).text;

  test("initialize and the aggregated lists come from the templates: no VM is resumed for them", async () => {
    const client = await open(AGGREGATE);
    assert.equal(client.getServerVersion()?.name, "mcpvisor");
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), ["fake__echo", "fake__recall", "fake__remember", "slow__echo", "slow__recall", "slow__remember"]);
    assert.equal(driver.running, 0);
    await client.close();
  });

  test("a single server's session passes lists through to its clone, which ends with the session", async () => {
    const client = await open("fake");
    assert.equal(client.getServerVersion()?.name, "fault-injecting-guest");
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((t) => t.name), ["echo", "remember", "recall"]);
    assert.equal(driver.running, 1);
    await client.close();
    await eventually(() => driver.running === 0, "no fake VMM left running");
  });

  test("an unknown tool and schema-invalid arguments are refused before any VM, with messages that say what to do", async () => {
    const client = await open("fake");
    await assert.rejects(client.callTool({ name: "nope", arguments: {} }), (err: McpError) => {
      assert.equal(err.code, -32602);
      assert.match(err.message, /Unknown tool 'nope' on server 'fake'; tools\/list shows the tools there are/);
      return true;
    });
    await assert.rejects(client.callTool({ name: "echo", arguments: { text: 5 } }), (err: McpError) => {
      assert.equal(err.code, -32602);
      assert.match(err.message, /Invalid arguments for tool 'echo'/);
      return true;
    });
    assert.equal(driver.running, 0, "refused before any VM");
    await client.close();
  });

  test("the aggregated endpoint names tools <server>__<tool>, routes calls, and names the servers for an unknown one", async () => {
    const client = await open(AGGREGATE);
    const { tools } = await client.listTools();
    assert.ok(tools.some((t) => t.name === "fake__echo") && tools.some((t) => t.name === "slow__echo"));
    assert.equal(text(await client.callTool({ name: "fake__echo", arguments: { text: "routed" } })), "routed");
    await assert.rejects(client.callTool({ name: "other__echo", arguments: {} }), /Unknown tool 'other__echo': names here are <server>__<name>, servers: fake, slow/);
    await client.close();
    await eventually(() => driver.running === 0, "no fake VMM left running");
  });

  test("a session's sandbox that dies while idle: the next call is told its state is gone, once; then a fresh one", async () => {
    const client = await open("fake");
    await client.callTool({ name: "remember", arguments: { key: "k", value: "v" } });
    const vm = vms.at(-1)!;
    driver.crashGuest(vm);
    await vm.exited;
    await new Promise((r) => setImmediate(r));
    await assert.rejects(client.callTool({ name: "recall", arguments: { key: "k" } }), (err: McpError) => {
      assert.equal(err.code, -32603);
      assert.match(err.message, /^MCP error -32603: The sandbox of this session for server 'fake' ended while idle \(the guest died: .*\); what it held \(files, memory, processes\) is gone/);
      assert.deepEqual(err.data, { server: "fake", retryable: true, reason: "STATE_LOST" });
      return true;
    });
    assert.equal(text(await client.callTool({ name: "recall", arguments: { key: "k" } })), "");
    await client.close();
  });

  test("a call past timeouts.callMs gets -32001 naming the setting, and the session goes on in a fresh sandbox", async () => {
    const client = await open("slow");
    await client.callTool({ name: "echo", arguments: { text: "first" } });
    driver.hangNextCall();
    await assert.rejects(client.callTool({ name: "echo", arguments: { text: "stuck" } }), (err: McpError) => {
      assert.equal(err.code, -32001);
      assert.match(err.message, /tools\/call took longer than 150 ms \(the manifest's timeouts\.callMs\) in server 'slow'; the sandbox was reset/);
      return true;
    });
    assert.equal(text(await client.callTool({ name: "echo", arguments: { text: "again" } })), "again");
    await client.close();
  });

  test("a failed resume is a clear, retryable error, and the gateway goes on", async () => {
    const client = await open("fake");
    driver.failNext("resume");
    driver.failNext("prestart");
    await assert.rejects(client.callTool({ name: "echo", arguments: { text: "x" } }), (err: McpError) => {
      assert.equal(err.code, -32603);
      assert.match(err.message, /The sandbox for server 'fake' failed \(.*\)\. What it held is gone; the next request gets a fresh sandbox, retry it\./);
      assert.equal((err.data as { retryable: boolean }).retryable, true);
      return true;
    });
    assert.equal(text(await client.callTool({ name: "echo", arguments: { text: "y" } })), "y");
    await client.close();
  });

  test("the guest gets the request's own trace context in _meta, a child of the client's, with no tracing subscriber", async () => {
    const client = await open("fake");
    await client.callTool({ name: "echo", arguments: { text: "first" } });
    const channel = vms.at(-1)!.channel;
    const seen: Record<string, unknown>[] = [];
    const send = channel.send.bind(channel);
    channel.send = (server, message) => (seen.push(message), send(server, message));
    const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
    await client.callTool({ name: "echo", arguments: { text: "traced" }, _meta: { traceparent: `00-${clientTrace}-00f067aa0ba902b7-01` } });
    const meta = (seen.at(-1)!.params as { _meta: { traceparent: string } })._meta;
    const [, traceId, spanId, flags] = meta.traceparent.split("-");
    assert.equal(traceId, clientTrace);
    assert.notEqual(spanId, "00f067aa0ba902b7");
    assert.equal(flags, "01");
    await client.close();
  });

  test("a route that names no hosted server is refused", () => {
    assert.equal(router.hasRoute("nope"), false);
    assert.equal(router.hasRoute("fake"), true);
  });
});

describe("router shutdown with saved sessions (FaultInjectingDriver, no image)", () => {
  test("a session whose transport closed first is still saved whole when the gateway closes right after", async () => {
    const { pool, dir } = await fakePool([fakeManifest({ timeouts: { callMs: 2_000, idleSuspendMs: 100 } })]);
    const store = new SessionStore(`${dir}/sessions`);
    // A disk that takes a moment: the record of the suspend is still being written when the gateway closes.
    const save = store.save.bind(store);
    store.save = async (record) => {
      await new Promise((r) => setTimeout(r, 100));
      await save(record);
    };
    const router = new Router(pool, createLogger("silent"), store);
    const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
    serverSide.sessionId = "saved-1";
    await router.connect("fake", serverSide, "in-memory", { persistent: true });
    const client = new Client({ name: "router-test", version: "0" });
    await client.connect(clientSide);
    await client.callTool({ name: "remember", arguments: { key: "k", value: "v" } });
    await eventually(() => pool.stats()[0]!.suspended === 1, "the idle session's sandbox to be suspended");
    // A face's close ends its transports (each starts its session's shutdown), then the gateway closes
    // the router and the pool without waiting in between.
    await serverSide.close();
    await router.close();
    await pool.close();
    const record = await store.load("saved-1");
    assert.ok(record, "the session's record is kept");
    const saved = savedRefOf("fake", record.sandboxes.fake!);
    assert.equal(await new SuspendStore(`${dir}/suspended`).exists(saved.server, saved.sandboxId), true, "and the state it points to");
  });
});
