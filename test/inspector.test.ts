import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { REPO_ROOT } from "../src/main.js";
import { startReadyGateway } from "./helpers.js";

// MCP Inspector's CLI (a client we did not write) lists and calls tools on the aggregated endpoint.
// Its exit codes: 0 ok, 4 unreachable, 5 tool not found or isError: true.
const inspector = (args: string[]) =>
  promisify(execFile)(process.execPath, [join(REPO_ROOT, "node_modules", "@modelcontextprotocol", "inspector", "clients", "launcher", "build", "index.js"), ...args], {
    timeout: 60_000,
  });

describe("MCP Inspector CLI against /mcp", { timeout: 180_000 }, () => {
  let gateway: Awaited<ReturnType<typeof startReadyGateway>>;
  let url: string;
  before(async () => {
    gateway = await startReadyGateway({ servers: ["memory", "exec"] });
    url = `http://127.0.0.1:${gateway.port}/mcp`;
  });
  after(async () => {
    await gateway?.close();
  });

  test("tools/list shows every server's tools, namespaced", async () => {
    const { stdout } = await inspector(["--cli", url, "--transport", "http", "--method", "tools/list"]);
    const names = (JSON.parse(stdout) as { tools: { name: string }[] }).tools.map((t) => t.name);
    assert.ok(names.includes("exec__run") && names.includes("memory__read_graph"), names.join(", "));
  });

  test("tools/call runs a command in a microVM", async () => {
    const { stdout } = await inspector([
      "--cli", url, "--transport", "http", "--method", "tools/call", "--tool-name", "exec__run",
      "--tool-args-json", JSON.stringify({ command: "echo inspected; uname -r" }),
    ]);
    const result = JSON.parse(stdout) as { structuredContent: { stdout: string }; isError: boolean };
    assert.equal(result.isError, false);
    assert.match(result.structuredContent.stdout, /^inspected\n.*cloud-amd64\n$/);
  });
});
