import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { RawMcpClient } from "../bench/raw-mcp-client.js";
import { REPO_ROOT } from "../src/main.js";
import { eventually, serversDirWith } from "./helpers.js";
import { freePort } from "./services/free-port.js";

/**
 * The gateway as users run it: its own process, so it can be killed with SIGKILL. Its log is dropped
 * unless MCPVISOR_TEST_GATEWAY_STDERR is set (then it shows, at debug level, for a failure's diagnosis).
 */
async function startGatewayProcess(port: number, serversDir: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [join(REPO_ROOT, "bin", "mcpvisor"), "start", "--port", String(port), "--servers", "memory"], {
    env: { ...process.env, MCPVISOR_SERVERS_DIR: serversDir, MCPVISOR_LOG_LEVEL: process.env.MCPVISOR_TEST_GATEWAY_STDERR ? "debug" : "warn" },
    stdio: ["ignore", "ignore", process.env.MCPVISOR_TEST_GATEWAY_STDERR ? "inherit" : "ignore"],
  });
  const deadline = Date.now() + 60_000;
  for (;;) {
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false);
    if (ready) return child;
    if (Date.now() > deadline || child.exitCode !== null) throw new Error("gateway did not become ready");
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Stops the gateway process with `signal` and starts it again on the same port; resolves with how it exited. */
async function restarted(gateway: ChildProcess, signal: NodeJS.Signals, port: number, serversDir: string): Promise<{ gateway: ChildProcess; code: number | null }> {
  const exited = new Promise<number | null>((r) => gateway.once("exit", r));
  gateway.kill(signal);
  const code = await exited;
  return { gateway: await startGatewayProcess(port, serversDir), code };
}

/** Servers whose memory sessions are suspended after 1 s idle. */
const quickSuspend = () => serversDirWith({ memory: (m) => ({ timeouts: { ...m.timeouts, idleSuspendMs: 1_000 } }) });

const suspendedCount = async (port: number): Promise<number> => {
  const report = (await (await fetch(`http://127.0.0.1:${port}/readyz`)).json()) as { servers: { suspended: number }[] };
  return report.servers.reduce((n, s) => n + s.suspended, 0);
};

/** A client's session on the memory server, holding one entity named `name`. */
async function sessionHolding(port: number, name: string): Promise<RawMcpClient> {
  const client = new RawMcpClient(`http://127.0.0.1:${port}/servers/memory/mcp`);
  await client.initialize();
  await client.request("tools/call", { name: "create_entities", arguments: { entities: [{ name, entityType: "t", observations: ["x"] }] } });
  return client;
}

async function entityNames(client: RawMcpClient): Promise<string[]> {
  const graph = (await client.request("tools/call", { name: "read_graph", arguments: {} })) as { structuredContent: { entities: { name: string }[] } };
  return graph.structuredContent.entities.map((e) => e.name);
}

test("a suspended session survives kill -9 of the gateway: the client carries on with its Mcp-Session-Id", { timeout: 240_000 }, async () => {
  const serversDir = await quickSuspend();
  const port = await freePort();
  let gateway = await startGatewayProcess(port, serversDir);
  try {
    const client = await sessionHolding(port, "survivor");
    await eventually(async () => (await suspendedCount(port)) === 1, "the session was suspended", 20_000, 200);
    ({ gateway } = await restarted(gateway, "SIGKILL", port, serversDir));
    assert.deepEqual(await entityNames(client), ["survivor"]);
    await client.close();
    const gone = new RawMcpClient(`http://127.0.0.1:${port}/servers/memory/mcp`);
    Object.assign(gone, { sessionId: (client as unknown as { sessionId: string }).sessionId });
    await assert.rejects(gone.request("tools/list", {}), /HTTP 404/, "a session ended with DELETE is gone for good");
  } finally {
    gateway.kill("SIGKILL");
  }
});

test("a graceful stop (SIGTERM) saves sessions that were running, and the client carries on after the restart", { timeout: 240_000 }, async () => {
  const serversDir = await serversDirWith({ memory: () => ({}) }); // the default idle suspend (60 s) never comes in this test
  const port = await freePort();
  let gateway = await startGatewayProcess(port, serversDir);
  try {
    const client = await sessionHolding(port, "deployed-over");
    assert.equal(await suspendedCount(port), 0, "the session's sandbox is running, not suspended");
    let code: number | null;
    ({ gateway, code } = await restarted(gateway, "SIGTERM", port, serversDir));
    assert.equal(code, 0);
    assert.deepEqual(await entityNames(client), ["deployed-over"]);
    await client.close();
  } finally {
    gateway.kill("SIGKILL");
  }
});

test("a session resumed from disk and then lost with the gateway (kill -9) is never revived with its older saved state", { timeout: 240_000 }, async () => {
  const serversDir = await quickSuspend();
  const port = await freePort();
  let gateway = await startGatewayProcess(port, serversDir);
  try {
    const client = await sessionHolding(port, "saved");
    await eventually(async () => (await suspendedCount(port)) === 1, "the session was suspended", 20_000, 200);
    // Resumed from disk for this write; what is on disk now is older than what the session holds.
    await client.request("tools/call", { name: "create_entities", arguments: { entities: [{ name: "after-resume", entityType: "t", observations: ["x"] }] } });
    assert.deepEqual((await entityNames(client)).sort(), ["after-resume", "saved"]);
    ({ gateway } = await restarted(gateway, "SIGKILL", port, serversDir));
    // The session's memory died with the gateway: its client must be told (404, start afresh), not be
    // answered from the state saved before its last write.
    await assert.rejects(entityNames(client), /HTTP 404/);
  } finally {
    gateway.kill("SIGKILL");
  }
});
