import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { ToolAnnotations } from "@modelcontextprotocol/sdk/types.js";
import { inheritedNodeFlags } from "./node-args.js";
import { runProcess } from "./run-process.js";
import { download, upload } from "./files.js";
import { downloadInputShape, downloadOutputShape, runInputShape, runJsInputShape, runOutputShape, uploadInputShape, uploadOutputShape } from "./schemas.js";
import { toToolResult } from "./tool-result.js";

export const EXEC_SERVER_VERSION = "0.1.0";

/** Commands change the guest (files in /tmp, processes), but the guest has no network. */
const annotations: ToolAnnotations = {
  readOnlyHint: false,
  destructiveHint: true,
  idempotentHint: false,
  openWorldHint: false,
};

const limitsNote =
  "stdout and stderr are each capped at 1 MiB. A timeout kills the whole process group; " +
  "background jobs are killed when the command exits.";

export function createExecServer(): McpServer {
  const server = new McpServer({ name: "mcpvisor-exec", version: EXEC_SERVER_VERSION });

  server.registerTool(
    "run",
    {
      title: "Run a shell command",
      description: `Runs a command with /bin/sh -c (busybox) in /tmp of a sandboxed VM without network. A non-zero exit code is a normal result. ${limitsNote}`,
      inputSchema: runInputShape,
      outputSchema: runOutputShape,
      annotations,
    },
    async ({ command, timeoutMs, stdin }) =>
      toToolResult(await runProcess({ file: "/bin/sh", args: ["-c", command], stdin, timeoutMs }), timeoutMs),
  );

  server.registerTool(
    "run_js",
    {
      title: "Run JavaScript",
      description: `Runs a JavaScript ES module in a fresh Node.js process in /tmp of a sandboxed VM without network; print results with console.log. ${limitsNote}`,
      inputSchema: runJsInputShape,
      outputSchema: runOutputShape,
      annotations,
    },
    // The code goes in on stdin rather than with -e: one argument is limited to 128 KiB on Linux.
    async ({ code, timeoutMs }) =>
      toToolResult(
        await runProcess({
          file: process.execPath,
          args: [...inheritedNodeFlags(), "--input-type=module", "-"],
          stdin: code,
          timeoutMs,
        }),
        timeoutMs,
      ),
  );

  server.registerTool(
    "upload",
    {
      title: "Upload a file or an archive",
      description: "Writes a file under /tmp of the sandbox from base64 (at most 2 MiB), or unpacks a .tar.gz archive into a directory there.",
      inputSchema: uploadInputShape,
      outputSchema: uploadOutputShape,
      annotations,
    },
    upload,
  );

  server.registerTool(
    "download",
    {
      title: "Download a file or a directory",
      description: "Reads a file under /tmp of the sandbox as base64 (at most 4 MiB), or a directory as a .tar.gz archive.",
      inputSchema: downloadInputShape,
      outputSchema: downloadOutputShape,
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    download,
  );

  return server;
}
