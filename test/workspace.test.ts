/**
 * The workspace: filesystem, exec and git co-located in one sandbox per session, acting on one
 * /workspace (docs/design/workspace.md). A coding agent's loop through `/mcp` with the SDK client,
 * across an idle suspend and a gateway restart; two sessions never see each other's workspace.
 */
import assert from "node:assert/strict";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { RawMcpClient } from "../bench/raw-mcp-client.js";
import { connect, eventually, serversDirWith, startReadyGateway, testConfig } from "./helpers.js";

const WORKSPACE = ["filesystem", "exec", "git"];
const REPO = "/workspace/calc";

type Gateway = Awaited<ReturnType<typeof startReadyGateway>>;

function textOf(result: CallToolResult): string {
  return result.content.map((c) => (c.type === "text" ? c.text : "")).join("\n");
}

/** A tool call through the merged catalog (`<server>__<tool>`) that must succeed. */
async function call(client: Client, name: string, args: Record<string, unknown>): Promise<CallToolResult> {
  const result = (await client.callTool({ name, arguments: args }, undefined, { timeout: 120_000 })) as CallToolResult;
  assert.notEqual(result.isError, true, `${name}: ${textOf(result)}`);
  return result;
}

async function run(client: Client, command: string): Promise<{ stdout: string; exitCode: number | null }> {
  const result = (await client.callTool({ name: "exec__run", arguments: { command, timeoutMs: 60_000 } }, undefined, { timeout: 120_000 })) as CallToolResult;
  return result.structuredContent as { stdout: string; exitCode: number | null };
}

describe("the workspace: filesystem, exec and git in one sandbox per session", { timeout: 600_000 }, () => {
  let serversDir: string;
  let gateway: Gateway;
  before(async () => {
    // Idle for 1.5 s, the session's workspace is suspended to disk; the next call resumes it.
    const quick = (m: { timeouts: object }) => ({ timeouts: { ...m.timeouts, idleSuspendMs: 1_500 } }) as never;
    serversDir = await serversDirWith(Object.fromEntries(WORKSPACE.map((s) => [s, quick])));
    gateway = await startReadyGateway({ servers: WORKSPACE, serversDir }, { pool: { prestarted: 1, warm: 1 } });
  });
  after(async () => {
    await gateway?.close();
  });
  const aggregate = () => `http://127.0.0.1:${gateway.port}/mcp`;
  const workspace = () => gateway.pool.stats().find((s) => s.server === "workspace")!;

  test("the three servers are one sandbox unit, their tools keep their own names", async () => {
    // Manifests load in file-name order.
    assert.deepEqual(workspace().members, ["exec", "filesystem", "git"]);
    const client = await connect(aggregate());
    const names = (await client.listTools()).tools.map((t) => t.name);
    for (const name of ["filesystem__write_file", "exec__run", "exec__upload", "git__git_commit", "git__git_log", "git__git_status"]) {
      assert.ok(names.includes(name), `${name} in ${names.join(", ")}`);
    }
    await client.close();
  });

  test("a coding agent's loop: write, test (fail), fix, test (pass), commit; suspend, resume and restart keep it", async () => {
    const agent = await connect(aggregate());
    await call(agent, "filesystem__create_directory", { path: REPO });
    await call(agent, "filesystem__write_file", { path: `${REPO}/calc.py`, content: "def add(a, b):\n    return a - b\n" });
    await call(agent, "filesystem__write_file", {
      path: `${REPO}/test_calc.py`,
      content: "import unittest\nfrom calc import add\n\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n",
    });
    // What filesystem wrote, exec sees: one /workspace.
    const failing = await run(agent, `cd ${REPO} && git init -q && python3 -m unittest 2>&1`);
    assert.notEqual(failing.exitCode, 0);
    assert.match(failing.stdout, /FAILED \(failures=1\)/);

    await call(agent, "filesystem__edit_file", { path: `${REPO}/calc.py`, edits: [{ oldText: "return a - b", newText: "return a + b" }] });
    const passing = await run(agent, `cd ${REPO} && python3 -m unittest 2>&1`);
    assert.equal(passing.exitCode, 0, passing.stdout);
    assert.match(passing.stdout, /OK/);

    // git, from PyPI unmodified, on the repository exec created.
    assert.match(textOf(await call(agent, "git__git_status", { repo_path: REPO })), /calc\.py/);
    await call(agent, "git__git_add", { repo_path: REPO, files: ["calc.py", "test_calc.py"] });
    assert.match(textOf(await call(agent, "git__git_commit", { repo_path: REPO, message: "add calc with a test" })), /committed/i);

    // Idle: the whole workspace (three servers, one VM) goes to disk, and comes back on the next call.
    await eventually(() => workspace().suspended === 1, "the session's workspace to be suspended", 30_000);
    const [suspended] = workspace().sandboxes;
    assert.equal(suspended!.pid, undefined, "no VM runs for it");
    const { size } = await stat(join(testConfig().cacheDir, "suspended", "workspace", `${suspended!.id}.mig.gz`));
    assert.ok(size < 32 * 1024 * 1024, `a suspended workspace with a small repository is ${size} bytes`);
    assert.match(textOf(await call(agent, "git__git_log", { repo_path: REPO })), /add calc with a test/);
    assert.equal((await run(agent, `cd ${REPO} && python3 -m unittest 2>&1 && git log --oneline | wc -l`)).exitCode, 0);

    // A gateway restart: the session's record and its saved workspace bring it back under its id.
    const sessionId = (agent.transport as unknown as { sessionId: string }).sessionId;
    await eventually(() => workspace().suspended === 1, "the workspace to be suspended again", 30_000);
    await gateway.close();
    gateway = await startReadyGateway({ servers: WORKSPACE, serversDir }, { pool: { prestarted: 1, warm: 1 } });
    const revived = new RawMcpClient(aggregate());
    revived.sessionId = sessionId;
    const log = (await revived.request("tools/call", { name: "git__git_log", arguments: { repo_path: REPO } })) as CallToolResult;
    assert.match(textOf(log), /add calc with a test/);
    const file = (await revived.request("tools/call", { name: "filesystem__read_text_file", arguments: { path: `${REPO}/calc.py` } })) as CallToolResult;
    assert.match(textOf(file), /return a \+ b/);
    await revived.close();
  });

  test("two sessions never see each other's workspace", async () => {
    const a = await connect(aggregate());
    const b = await connect(aggregate());
    await call(a, "filesystem__write_file", { path: "/workspace/mine.txt", content: "only a's" });
    assert.equal((await run(a, "cat /workspace/mine.txt")).stdout, "only a's");
    assert.equal((await run(b, "cat /workspace/mine.txt 2>/dev/null || echo absent")).stdout, "absent\n");
    const read = (await b.callTool({ name: "filesystem__read_text_file", arguments: { path: "/workspace/mine.txt" } })) as CallToolResult;
    assert.equal(read.isError, true, "b's filesystem server has no such file");
    const sandboxes = workspace().sandboxes.filter((s) => s.state !== "suspended");
    assert.equal(new Set(sandboxes.map((s) => s.id)).size, sandboxes.length);
    await Promise.all([a.close(), b.close()]);
  });

  test("past its size the workspace refuses writes (ENOSPC) and the session carries on", async () => {
    const client = await connect(aggregate());
    await call(client, "filesystem__write_file", { path: "/workspace/keep.txt", content: "still here" });
    const full = await run(client, "dd if=/dev/zero of=/workspace/big bs=1M count=300 2>&1; echo exit=$?");
    assert.match(full.stdout, /No space left on device/);
    assert.match(full.stdout, /exit=1/);
    await run(client, "rm -f /workspace/big");
    assert.equal(textOf(await call(client, "filesystem__read_text_file", { path: "/workspace/keep.txt" })), "still here");
    await client.close();
  });

  test("on its own endpoint git answers for a path that is no repository with an error, not a crash", async () => {
    const client = await connect(gateway.url("git"));
    const result = (await client.callTool({ name: "git_status", arguments: { repo_path: "/workspace" } })) as CallToolResult;
    assert.equal(result.isError, true);
    // mcp-server-git reports an InvalidGitRepositoryError by its path alone.
    assert.match(textOf(result), /git_status: \/workspace/);
    // The server is still there for the next call.
    const again = (await client.callTool({ name: "git_status", arguments: { repo_path: "/workspace" } })) as CallToolResult;
    assert.equal(again.isError, true);
    await client.close();
  });
});
