import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import type { RunResult } from "./run-process.js";

const serverPath = fileURLToPath(new URL("./server.ts", import.meta.url));

let client: Client;

before(async () => {
  client = new Client({ name: "exec-test", version: "0.0.0" });
  await client.connect(new StdioClientTransport({ command: process.execPath, args: ["--import", "tsx", serverPath] }));
  // Listing caches the output schemas, so every callTool below also checks structuredContent against them.
  await client.listTools();
});

after(async () => {
  await client.close();
});

async function call(name: string, args: Record<string, unknown>): Promise<{ result: CallToolResult; run: RunResult }> {
  const result = (await client.callTool({ name, arguments: args })) as CallToolResult;
  return { result, run: result.structuredContent as RunResult };
}

function textOf(result: CallToolResult): string {
  return result.content.map((block) => (block.type === "text" ? block.text : "")).join("");
}

/** kill -0 also succeeds on a zombie, which a container's init may never reap; a zombie counts as gone. */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.[0] !== "Z";
  } catch {
    return false;
  }
}

async function waitGone(pid: number): Promise<boolean> {
  for (let i = 0; i < 20; i++) {
    if (!isAlive(pid)) return true;
    await sleep(50);
  }
  return false;
}

describe("exec server", () => {
  test("lists its tools with output schemas and annotations", async () => {
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), ["download", "output", "run", "run_js", "start", "stop", "upload"]);
    for (const tool of tools) {
      assert.equal(tool.outputSchema?.type, "object");
      assert.equal(tool.annotations?.readOnlyHint, tool.name === "download", tool.name);
      assert.equal(tool.annotations?.openWorldHint, false);
    }
    assert.equal(client.getServerVersion()?.name, "mcpvisor-exec");
  });

  test("run returns stdout, stderr and a non-zero exit code as a normal result", async () => {
    const { result, run } = await call("run", { command: "echo out; echo err >&2; pwd; exit 3" });
    assert.equal(result.isError, false);
    assert.equal(run.stdout, "out\n/tmp\n");
    assert.equal(run.stderr, "err\n");
    assert.equal(run.exitCode, 3);
    assert.equal(run.signal, null);
    assert.equal(run.timedOut, false);
    assert.equal(run.truncated, false);
    assert.match(textOf(result), /Exit code 3/);
  });

  test("run passes stdin and a fixed environment", async () => {
    const { run } = await call("run", { command: 'tr a-z A-Z; echo "$HOME $PATH"', stdin: "hello\n" });
    assert.equal(run.stdout, "HELLO\n/tmp /usr/local/bin:/usr/bin:/bin:/sbin\n");
    assert.equal(run.exitCode, 0);
  });

  test("a timeout kills the whole process group and returns the partial output", async () => {
    const started = Date.now();
    const { result, run } = await call("run", { command: "echo started; sleep 30 & echo $!; sleep 30", timeoutMs: 1000 });
    assert.ok(Date.now() - started < 5000, "returned within about the timeout");
    assert.equal(result.isError, true);
    assert.equal(run.timedOut, true);
    assert.equal(run.signal, "SIGKILL");
    assert.match(textOf(result), /Timed out after 1000 ms/);
    const [first, pid] = run.stdout.trim().split("\n");
    assert.equal(first, "started");
    assert.ok(await waitGone(Number(pid)), `background sleep ${pid} is gone`);
  });

  test("background jobs die when the command exits instead of holding the call open", async () => {
    const started = Date.now();
    const { run } = await call("run", { command: "sleep 30 & echo $!" });
    assert.ok(Date.now() - started < 3000);
    assert.equal(run.exitCode, 0);
    assert.ok(await waitGone(Number(run.stdout.trim())));
  });

  test("output is capped at 1 MiB per stream", async () => {
    const { result, run } = await call("run", { command: "head -c 3000000 /dev/zero | tr '\\0' a; echo done >&2" });
    assert.equal(result.isError, false);
    assert.equal(run.exitCode, 0);
    assert.equal(run.truncated, true);
    assert.equal(run.stdout.length, 1024 * 1024);
    assert.equal(run.stderr, "done\n");
  });

  test("run_js runs a module snippet and returns its output", async () => {
    const { result, run } = await call("run_js", {
      code: "const x = await Promise.resolve(21); console.log(x * 2); console.error('note');",
    });
    assert.equal(result.isError, false);
    assert.equal(run.stdout, "42\n");
    assert.equal(run.stderr, "note\n");
    assert.equal(run.exitCode, 0);
  });

  test("run_js reports a thrown error as a non-zero exit", async () => {
    const { result, run } = await call("run_js", { code: "throw new Error('boom')" });
    assert.equal(result.isError, false);
    assert.equal(run.exitCode, 1);
    assert.match(run.stderr, /boom/);
  });

  test("run_js times out", async () => {
    const { result, run } = await call("run_js", { code: "console.log('spin'); for (;;) {}", timeoutMs: 1000 });
    assert.equal(result.isError, true);
    assert.equal(run.timedOut, true);
    assert.equal(run.stdout, "spin\n");
  });

  test("each run_js call gets a fresh process with fresh random state", async () => {
    const code = "console.log(crypto.randomUUID())";
    const [a, b] = await Promise.all([call("run_js", { code }), call("run_js", { code })]);
    assert.match(a.run.stdout, /^[0-9a-f-]{36}\n$/);
    assert.notEqual(a.run.stdout, b.run.stdout);
  });

  test("bad input is an error result, and the server keeps serving", async () => {
    for (const [name, args] of [
      ["run", { command: "" }],
      ["run", {}],
      ["run", { command: "true", timeoutMs: 120_001 }],
      ["run", { command: "true", timeoutMs: 1.5 }],
      ["run_js", { code: 42 }],
    ] as const) {
      const result = (await client.callTool({ name, arguments: args })) as CallToolResult;
      assert.equal(result.isError, true, `${name} ${JSON.stringify(args)}`);
      assert.match(textOf(result), /Input validation error/);
    }
    const { run } = await call("run", { command: "echo still here" });
    assert.equal(run.stdout, "still here\n");
  });

  describe("files in and out", () => {
    const dir = `mcpv-exec-files-${process.pid}`;

    test("upload writes a file under /tmp and download reads it back", async () => {
      const content = Buffer.from("print('hello from the sandbox')\n");
      const up = (await client.callTool({ name: "upload", arguments: { path: `${dir}/src/hello.py`, contentBase64: content.toString("base64") } })) as CallToolResult;
      assert.equal(up.isError, undefined, textOf(up));
      assert.deepEqual(up.structuredContent, { path: `/tmp/${dir}/src/hello.py`, bytes: content.length, entries: 1 });
      const down = (await client.callTool({ name: "download", arguments: { path: `/tmp/${dir}/src/hello.py` } })) as CallToolResult;
      const got = down.structuredContent as { contentBase64: string; archive: boolean };
      assert.equal(got.archive, false);
      assert.deepEqual(Buffer.from(got.contentBase64, "base64"), content);
    });

    test("an archive unpacks into a directory, and a directory downloads as an archive", async () => {
      const { execFileSync } = await import("node:child_process");
      const { mkdtempSync, writeFileSync, mkdirSync } = await import("node:fs");
      const src = mkdtempSync("/tmp/mcpv-exec-archive-");
      mkdirSync(`${src}/pkg`);
      writeFileSync(`${src}/pkg/a.txt`, "a");
      writeFileSync(`${src}/b.txt`, "b");
      const archive = execFileSync("tar", ["-czf", "-", "-C", src, "."]);
      const up = (await client.callTool({ name: "upload", arguments: { path: `${dir}/unpacked`, contentBase64: archive.toString("base64"), archive: true } })) as CallToolResult;
      assert.equal(up.isError, undefined, textOf(up));
      assert.equal(readFileSync(`/tmp/${dir}/unpacked/pkg/a.txt`, "utf8"), "a");
      const down = (await client.callTool({ name: "download", arguments: { path: `${dir}/unpacked` } })) as CallToolResult;
      const got = down.structuredContent as { contentBase64: string; archive: boolean };
      assert.equal(got.archive, true);
      const listed = execFileSync("tar", ["-tzf", "-"], { input: Buffer.from(got.contentBase64, "base64") }).toString("utf8");
      assert.match(listed, /pkg\/a\.txt/);
      assert.match(listed, /b\.txt/);
    });

    test("paths outside /tmp and sizes past the caps get a clear error", async () => {
      const outside = (await client.callTool({ name: "upload", arguments: { path: "/etc/passwd", contentBase64: "eA==" } })) as CallToolResult;
      assert.equal(outside.isError, true);
      assert.match(textOf(outside), /'\/etc\/passwd' is outside \/tmp/);
      const escape = (await client.callTool({ name: "download", arguments: { path: "../etc/passwd" } })) as CallToolResult;
      assert.match(textOf(escape), /is outside \/tmp/);
      const big = Buffer.alloc(2 * 1024 * 1024 + 1).toString("base64");
      const tooBig = (await client.callTool({ name: "upload", arguments: { path: `${dir}/big.bin`, contentBase64: big } })) as CallToolResult;
      assert.equal(tooBig.isError, true);
      assert.match(textOf(tooBig), /over the cap of 2 MiB per upload/);
      const missing = (await client.callTool({ name: "download", arguments: { path: `${dir}/nothing-here` } })) as CallToolResult;
      assert.match(textOf(missing), /does not exist/);
    });
  });

  describe("background processes", () => {
    type Job = { id: number; running: boolean; exitCode: number | null; signal: string | null; stdout: string; stderr: string };
    const start = async (command: string) => {
      const result = (await client.callTool({ name: "start", arguments: { command } })) as CallToolResult;
      assert.notEqual(result.isError, true, textOf(result));
      return result.structuredContent as { id: number; pid: number };
    };
    const job = async (name: "output" | "stop", id: number) => ((await client.callTool({ name, arguments: { id } })) as CallToolResult).structuredContent as Job;

    test("start leaves a process running; output reads what it wrote since the last read; stop ends its group", async () => {
      const { id, pid } = await start("i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done");
      await sleep(600);
      const first = await job("output", id);
      assert.equal(first.running, true);
      assert.match(first.stdout, /^tick 0\ntick 1\n/);
      await sleep(300);
      const second = await job("output", id);
      assert.doesNotMatch(second.stdout, /tick 0\n/, "only what came since the last read");
      assert.match(second.stdout, /tick \d+\n/);
      const stopped = await job("stop", id);
      assert.equal(stopped.running, false);
      assert.equal(stopped.signal, "SIGTERM");
      assert.ok(await waitGone(pid), "the process group is gone");
    });

    test("a process that ends by itself reports its exit code and last output", async () => {
      const { id } = await start("echo done; echo oops >&2; exit 4");
      await sleep(300);
      const out = await job("output", id);
      assert.deepEqual([out.running, out.exitCode, out.stdout, out.stderr], [false, 4, "done\n", "oops\n"]);
    });

    test("at most 8 run at once, and an unknown id is a clear error", async () => {
      const ids: number[] = [];
      for (let i = 0; i < 8; i++) ids.push((await start("sleep 30")).id);
      const ninth = (await client.callTool({ name: "start", arguments: { command: "sleep 30" } })) as CallToolResult;
      assert.equal(ninth.isError, true);
      assert.match(textOf(ninth), /8 background processes are running, the most a sandbox may have \(8\)/);
      for (const id of ids) await job("stop", id);
      const unknown = (await client.callTool({ name: "output", arguments: { id: 9999 } })) as CallToolResult;
      assert.equal(unknown.isError, true);
      assert.match(textOf(unknown), /no background process 9999/);
    });
  });

  test("with a progress token, run sends its output as it comes in progress notifications", async () => {
    const updates: { progress: number; message?: string }[] = [];
    const result = (await client.callTool(
      { name: "run", arguments: { command: "for i in 1 2 3; do echo line $i; sleep 0.7; done" } },
      undefined,
      { onprogress: (p) => updates.push(p) },
    )) as CallToolResult;
    assert.equal((result.structuredContent as RunResult).stdout, "line 1\nline 2\nline 3\n", "the result still has it all");
    assert.ok(updates.length >= 1, "at least one progress notification during the 2 s run");
    assert.match(updates[0]!.message ?? "", /^line 1\n/);
    for (let i = 1; i < updates.length; i++) assert.ok(updates[i]!.progress > updates[i - 1]!.progress, "progress increases");
  });
});
