import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { CallToolResult, ToolAnnotations } from "@modelcontextprotocol/sdk/types.js";
import { inheritedNodeFlags } from "./node-args.js";
import { runProcess } from "./run-process.js";
import { BackgroundError, BackgroundJobs, MAX_BACKGROUND } from "./background.js";
import { download, upload } from "./files.js";
import { WORK_DIR } from "./limits.js";
import {
  downloadInputShape,
  downloadOutputShape,
  jobInputShape,
  jobOutputShape,
  runInputShape,
  runJsInputShape,
  runOutputShape,
  startInputShape,
  startOutputShape,
  uploadInputShape,
  uploadOutputShape,
} from "./schemas.js";
import { outputProgress } from "./progress.js";
import { toToolResult } from "./tool-result.js";

export const EXEC_SERVER_VERSION = "0.1.0";

/** Commands change the guest (files in the work directory, processes), but the guest has no network. */
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
      description: `Runs a command with /bin/sh -c (busybox) in ${WORK_DIR} of a sandboxed VM without network. A non-zero exit code is a normal result. With a progress token, output is also sent as it comes, in progress notifications. ${limitsNote}`,
      inputSchema: runInputShape,
      outputSchema: runOutputShape,
      annotations,
    },
    async ({ command, timeoutMs, stdin }, extra) => {
      const progress = outputProgress(extra);
      try {
        return toToolResult(await runProcess({ file: "/bin/sh", args: ["-c", command], stdin, timeoutMs, onOutput: progress?.push }), timeoutMs);
      } finally {
        progress?.stop();
      }
    },
  );

  server.registerTool(
    "run_js",
    {
      title: "Run JavaScript",
      description: `Runs a JavaScript ES module in a fresh Node.js process in ${WORK_DIR} of a sandboxed VM without network; print results with console.log. ${limitsNote}`,
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

  const jobs = new BackgroundJobs();
  const jobResult = (run: () => CallToolResult | Promise<CallToolResult>) => async (): Promise<CallToolResult> => {
    try {
      return await run();
    } catch (err) {
      if (!(err instanceof BackgroundError)) throw err;
      return { content: [{ type: "text", text: err.message }], isError: true };
    }
  };
  const describeJob = (out: ReturnType<BackgroundJobs["output"]>): CallToolResult => {
    const status = out.running ? "running" : out.signal ? `killed by ${out.signal}` : `exited with code ${out.exitCode}`;
    const parts = [`Background process ${out.id} (${out.command}): ${status}.`];
    if (out.droppedBytes) parts.push(`${out.droppedBytes} bytes of output were dropped before they were read.`);
    if (out.stdout) parts.push(`--- stdout ---\n${out.stdout}`);
    if (out.stderr) parts.push(`--- stderr ---\n${out.stderr}`);
    return { content: [{ type: "text", text: parts.join("\n") }], structuredContent: { ...out } };
  };

  server.registerTool(
    "start",
    {
      title: "Start a background process",
      description: `Starts a command that keeps running between calls (a dev server, a watch) in ${WORK_DIR} of the sandbox; at most ${MAX_BACKGROUND} at once. Read what it writes with \`output\`, end it with \`stop\`. It ends with the sandbox.`,
      inputSchema: startInputShape,
      outputSchema: startOutputShape,
      annotations,
    },
    ({ command }) =>
      jobResult(() => {
        const { id, pid } = jobs.start(command);
        return { content: [{ type: "text", text: `Started background process ${id} (pid ${pid}).` }], structuredContent: { id, pid } };
      })(),
  );

  server.registerTool(
    "output",
    {
      title: "Read a background process's output",
      description: "What a background process wrote since the last read, and whether it still runs.",
      inputSchema: jobInputShape,
      outputSchema: jobOutputShape,
      annotations: { readOnlyHint: false, openWorldHint: false },
    },
    ({ id }) => jobResult(() => describeJob(jobs.output(id)))(),
  );

  server.registerTool(
    "stop",
    {
      title: "Stop a background process",
      description: "Ends a background process and everything it started (SIGTERM, then SIGKILL after 2 s), and returns what it wrote last.",
      inputSchema: jobInputShape,
      outputSchema: jobOutputShape,
      annotations,
    },
    ({ id }) => jobResult(async () => describeJob(await jobs.stop(id)))(),
  );

  server.registerTool(
    "upload",
    {
      title: "Upload a file or an archive",
      description: `Writes a file under ${WORK_DIR} of the sandbox from base64 (at most 2 MiB), or unpacks a .tar.gz archive into a directory there.`,
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
      description: `Reads a file under ${WORK_DIR} of the sandbox as base64 (at most 4 MiB), or a directory as a .tar.gz archive.`,
      inputSchema: downloadInputShape,
      outputSchema: downloadOutputShape,
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    download,
  );

  return server;
}
