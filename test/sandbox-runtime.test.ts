import assert from "node:assert/strict";
import { release } from "node:os";
import { after, before, describe, test } from "node:test";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { McpError, type CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { connect, eventually, sh, startReadyGateway } from "./helpers.js";

type ReadyGateway = Awaited<ReturnType<typeof startReadyGateway>>;

describe("hosted servers in microVM clones, through the SDK client over Streamable HTTP", { timeout: 300_000 }, () => {
  let gateway: ReadyGateway;
  const clients: Client[] = [];
  const open = async (server: string) => {
    const client = await connect(gateway.url(server));
    clients.push(client);
    return client;
  };

  before(async () => {
    gateway = await startReadyGateway({ servers: ["memory", "exec"] });
  });
  after(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await gateway?.close();
  });

  test("server-memory from npm answers real tools/calls in its clone", async () => {
    const client = await open("memory");
    assert.equal(client.getServerVersion()?.name, "memory-server");
    const tools = await client.listTools();
    assert.ok(tools.tools.some((t) => t.name === "create_entities"));
    await client.callTool({
      name: "create_entities",
      arguments: { entities: [{ name: "mcpvisor", entityType: "project", observations: ["runs servers in microVMs"] }] },
    });
    const graph = (await client.callTool({ name: "read_graph", arguments: {} })) as CallToolResult;
    assert.match(JSON.stringify(graph.content), /runs servers in microVMs/);
  });

  test("exec runs in the guest: its kernel is the guest's, and it has no network interface but lo", async () => {
    const client = await open("exec");
    const uname = await sh(client, "uname -r");
    assert.equal(uname.exitCode, 0);
    assert.match(uname.stdout.trim(), /cloud-amd64$/);
    assert.notEqual(uname.stdout.trim(), release(), "the kernel must be the guest's, not the host's");
    const net = await sh(client, "ls /sys/class/net");
    assert.deepEqual(net.stdout.trim().split(/\s+/), ["lo"]);
  });

  test("two clones of one template do not see each other's writes and draw different random bytes", async () => {
    const a = await open("exec");
    const b = await open("exec");
    await sh(a, "echo secret-of-a > /tmp/mine");
    assert.equal((await sh(a, "cat /tmp/mine")).stdout.trim(), "secret-of-a");
    const other = await sh(b, "cat /tmp/mine");
    assert.notEqual(other.exitCode, 0, "clone b must not see clone a's file");
    const draw = "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'";
    const [ra, rb] = [(await sh(a, draw)).stdout, (await sh(b, draw)).stdout];
    assert.equal(ra.length, 32);
    assert.notEqual(ra, rb, "clones must not share random state");
    const clock = Number((await sh(a, "date +%s")).stdout.trim());
    assert.ok(Math.abs(clock - Date.now() / 1000) < 5, `guest clock ${clock} must be set from the host after resume`);
  });

  test("a killed QEMU fails the call in flight with a clear error, and the next call gets a fresh clone", async () => {
    const client = await open("exec");
    await sh(client, "echo before > /tmp/state");
    const leased = () => gateway.pool.stats().find((s) => s.members.includes("exec"))!.sandboxes;
    const before = new Set(leased().map((s) => s.pid));
    const call = client.callTool({ name: "run", arguments: { command: "sleep 20" } });
    await eventually(() => leased().some((s) => s.state === "active"), "the call to run in its sandbox");
    const mine = leased().filter((s) => s.state === "active");
    assert.equal(mine.length, 1, "exactly one exec sandbox has a call in flight");
    process.kill(mine[0]!.pid!, "SIGKILL");
    await assert.rejects(call, (err: unknown) => {
      assert.ok(err instanceof McpError);
      assert.equal(err.code, -32603);
      assert.match(err.message, /sandbox for server 'exec' failed/);
      assert.equal((err.data as { retryable?: boolean }).retryable, true);
      return true;
    });
    const next = await sh(client, "cat /tmp/state || echo fresh");
    assert.equal(next.stdout.trim(), "fresh", "the next call runs in a new clone of the template");
    assert.ok(leased().every((s) => s.pid !== mine[0]!.pid));
    assert.ok(before.size >= 1);
  });

  test("a sandbox that dies while idle: the session's next request is told its state is gone, never answered from a blank clone", async () => {
    const client = await open("memory");
    await client.callTool({ name: "create_entities", arguments: { entities: [{ name: "held", entityType: "t", observations: ["x"] }] } });
    const leased = () => gateway.pool.stats().find((s) => s.server === "memory")!.sandboxes;
    const before = new Set(leased().map((s) => s.id));
    const mine = leased().filter((s) => s.state === "idle" && s.pid !== undefined);
    const victim = mine.at(-1)!; // the newest lease: this session's
    process.kill(victim.pid!, "SIGKILL");
    await eventually(() => !leased().some((s) => s.id === victim.id), "the dead sandbox to be let go");
    await assert.rejects(client.callTool({ name: "read_graph", arguments: {} }), (err: unknown) => {
      assert.ok(err instanceof McpError);
      assert.match(err.message, /ended while idle .* what it held .* is gone/);
      assert.equal((err.data as { reason?: string }).reason, "STATE_LOST");
      return true;
    });
    const graph = (await client.callTool({ name: "read_graph", arguments: {} })) as CallToolResult;
    assert.deepEqual((graph.structuredContent as { entities: unknown[] }).entities, [], "told once, the session goes on in a fresh clone");
    assert.ok(leased().some((s) => !before.has(s.id)));
  });
});
