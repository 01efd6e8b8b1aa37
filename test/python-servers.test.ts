/**
 * Python MCP servers from PyPI, unmodified, through the gateway: mcp-server-time and mcp-server-fetch
 * (the default manifests), the latter reaching a real local HTTP server through its egress. And PyPI
 * sources that cannot be built fail that server alone, naming it and the reason.
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { connect, serversDirWith, sh, startReadyGateway, testConfig } from "./helpers.js";
import { startGateway } from "../src/main.js";
import { createLogger } from "../src/telemetry/log.js";

const PAGE = `<!doctype html><html><head><title>Release notes</title></head><body>
<article><h1>mcpvisor 0.2</h1><p>Python servers now run in <strong>microVMs</strong>.</p>
<ul><li>time</li><li>fetch</li></ul></article></body></html>`;

describe("Python servers from PyPI", { timeout: 300_000 }, () => {
  let gateway: Awaited<ReturnType<typeof startReadyGateway>>;
  let site: Server;
  let sitePort: number;
  const seen: string[] = [];

  before(async () => {
    site = createServer((req, res) => {
      seen.push(req.url ?? "");
      if (req.url === "/notes.html") res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(PAGE);
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => site.listen(0, "127.0.0.1", r));
    sitePort = (site.address() as { port: number }).port;
    // The default fetch manifest allows public:80 and public:443; the test's site is on this machine.
    const serversDir = await serversDirWith({
      time: () => ({}),
      // Its own SSRF guard refuses private addresses too (host.internal is 10.0.2.2 in the guest) unless told.
      fetch: (m) => ({ args: ["--allow-private-ips"], network: { ...(m.network as object), allow: [`host.internal:${sitePort}`] } as never }),
    });
    gateway = await startReadyGateway({ serversDir, servers: ["time", "fetch"] });
  });

  after(async () => {
    await gateway?.close();
    site?.close();
  });

  test("mcp-server-time answers get_current_time for a named zone, on its own endpoint and on /mcp", async () => {
    const client = await connect(gateway.url("time"));
    const result = (await client.callTool({ name: "get_current_time", arguments: { timezone: "Asia/Tokyo" } })) as CallToolResult;
    assert.equal(result.isError, false, JSON.stringify(result));
    const now = result.structuredContent as { timezone: string; datetime: string };
    assert.equal(now.timezone, "Asia/Tokyo");
    assert.match(now.datetime, /\+09:00$/);
    const drift = Math.abs(Date.parse(now.datetime) - Date.now());
    assert.ok(drift < 60_000, `the guest's clock is the host's after resume (off by ${drift} ms)`);
    await client.close();

    const aggregate = await connect(`http://127.0.0.1:${gateway.port}/mcp`);
    const names = (await aggregate.listTools()).tools.map((t) => t.name);
    assert.ok(names.includes("time__convert_time") && names.includes("fetch__fetch"), names.join(", "));
    const converted = (await aggregate.callTool({ name: "time__convert_time", arguments: { source_timezone: "UTC", time: "12:00", target_timezone: "America/New_York" } })) as CallToolResult;
    assert.equal(converted.isError, false, JSON.stringify(converted));
    assert.match(JSON.stringify(converted.structuredContent), /America\/New_York/);
    await aggregate.close();
  });

  test("mcp-server-fetch turns a page from a local HTTP server into markdown, through its egress", async () => {
    const client = await connect(gateway.url("fetch"));
    const result = (await client.callTool({ name: "fetch", arguments: { url: `http://host.internal:${sitePort}/notes.html` } })) as CallToolResult;
    const text = (result.content[0] as { text: string }).text;
    assert.equal(result.isError, false, text);
    assert.match(text, /^# mcpvisor 0\.2$/m, "the heading became markdown");
    assert.match(text, /^\* fetch$/m, "the list became markdown");
    assert.ok(seen.includes("/notes.html"));
    await client.close();
  });
});

test("a PyPI source that cannot be built fails that server alone, naming it and why; the others are served", { timeout: 300_000 }, async () => {
  const serversDir = await serversDirWith({ time: () => ({}) });
  const bad = {
    "no-such-version": { source: { kind: "pypi", package: "mcp-server-time", version: "1999.1.1" }, command: "mcp-server-time" },
    "no-such-script": { source: { kind: "pypi", package: "mcp-server-time", version: "2026.10.19" }, command: "mcp-server-clock" },
    // Windows wheels only, no sdist: nothing fits the guest's Python on Linux.
    "wrong-platform": { source: { kind: "pypi", package: "pywin32", version: "311" }, command: "pywin32_postinstall" },
  };
  for (const [name, manifest] of Object.entries(bad)) {
    await writeFile(join(serversDir, `${name}.json`), JSON.stringify({ name, ...manifest, pool: { prestarted: 0, warm: 0 } }));
  }
  const config = testConfig({ serversDir });
  const gateway = await startGateway(config, createLogger(config.logLevel), () => undefined);
  try {
    await gateway.settled;
    const status = new Map(gateway.pool.stats().map((s) => [s.server, s]));
    const reason = (server: string) => {
      assert.equal(status.get(server)?.status, "failed", server);
      return status.get(server)?.reason ?? "";
    };
    assert.match(reason("no-such-version"), /server 'no-such-version' \(pypi mcp-server-time@1999\.1\.1\).*(No matching distribution|Could not find a version)/);
    assert.match(reason("no-such-script"), /server 'no-such-script'.*has no console script 'mcp-server-clock'.*it has: .*\bmcp-server-time\b/);
    assert.match(reason("wrong-platform"), /server 'wrong-platform' \(pypi pywin32@311\).*(No matching distribution|Could not find a version)/);
    assert.equal(status.get("time")?.status, "ready");
    const client = await connect(`http://127.0.0.1:${gateway.port}/servers/time/mcp`);
    const result = (await client.callTool({ name: "get_current_time", arguments: { timezone: "UTC" } })) as CallToolResult;
    assert.equal(result.isError, false);
    await client.close();
  } finally {
    await gateway.close();
  }
});

test("exec's guest has Debian's python3, pip and git: upload code and its test, run them, fix, commit, download, serve it in the background", { timeout: 120_000 }, async () => {
  const gateway = await startReadyGateway({ servers: ["exec"] });
  try {
    const client = await connect(gateway.url("exec"));
    const versions = await sh(client, "python3 --version && python3 -m pip --version | cut -d' ' -f1-2 && git --version", 60_000);
    assert.match(versions.stdout, /^Python 3\.11\.\d+\npip \d+.*\ngit version 2\.\d+/, versions.stderr);
    const upload = async (path: string, text: string) => {
      const result = (await client.callTool({ name: "upload", arguments: { path, contentBase64: Buffer.from(text).toString("base64") } })) as CallToolResult;
      assert.notEqual(result.isError, true, JSON.stringify(result.content));
    };
    await upload("proj/calc.py", "def add(a, b):\n    return a - b\n");
    await upload("proj/test_calc.py", "import unittest\nfrom calc import add\n\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n");
    const failing = await sh(client, "cd /workspace/proj && git init -q && python3 -m unittest 2>&1", 60_000);
    assert.notEqual(failing.exitCode, 0);
    assert.match(failing.stdout, /FAILED \(failures=1\)/);
    // Another size as well as another text: a .pyc is checked by the source's mtime in seconds and its size.
    await upload("proj/calc.py", "def add(a, b):\n    return a + b  # fixed\n");
    const passing = await sh(client, "cd /workspace/proj && python3 -m unittest 2>&1", 60_000);
    assert.equal(passing.exitCode, 0, passing.stdout);
    const commit = await sh(client, "cd /workspace/proj && git add calc.py test_calc.py && git -c user.name=agent -c user.email=agent@example.invalid commit -qm 'add calc' && git log --oneline");
    assert.match(commit.stdout, /^[0-9a-f]+ add calc$/m, commit.stderr);
    const download = (await client.callTool({ name: "download", arguments: { path: "proj" } })) as CallToolResult;
    const archive = download.structuredContent as { archive: boolean; contentBase64: string };
    assert.equal(archive.archive, true);
    const { execFileSync } = await import("node:child_process");
    const listed = execFileSync("tar", ["-tzf", "-"], { input: Buffer.from(archive.contentBase64, "base64") }).toString("utf8");
    assert.match(listed, /\.\/calc\.py/);
    assert.match(listed, /\.\/\.git\/HEAD/);

    // A dev server left running between calls, reached by a later command, then stopped.
    const started = (await client.callTool({ name: "start", arguments: { command: "cd /workspace/proj && exec python3 -m http.server 8000 --bind 127.0.0.1" } })) as CallToolResult;
    const { id } = started.structuredContent as { id: number };
    const fetched = await sh(client, "for i in $(seq 1 50); do wget -qO- http://127.0.0.1:8000/calc.py 2>/dev/null && break; sleep 0.2; done", 30_000);
    assert.match(fetched.stdout, /return a \+ b/);
    const stopped = (await client.callTool({ name: "stop", arguments: { id } })) as CallToolResult;
    assert.equal((stopped.structuredContent as { running: boolean }).running, false);
    assert.match((stopped.structuredContent as { stderr: string }).stderr, /GET \/calc\.py/, "its log, read after the fact");

    // A long command's output arrives as it comes, through the gateway, as progress notifications.
    const updates: { message?: string }[] = [];
    await client.callTool({ name: "run", arguments: { command: "for i in 1 2 3; do echo step $i; sleep 1; done" } }, undefined, { onprogress: (p) => updates.push(p) });
    assert.ok(updates.some((u) => /step 1/.test(u.message ?? "")), JSON.stringify(updates));
    await client.close();
  } finally {
    await gateway.close();
  }
});
