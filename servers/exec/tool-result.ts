import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import type { RunResult } from "./run-process.js";

/** A run as a tool result. A non-zero exit is information, not a tool error; a timeout is an error. */
export function toToolResult(result: RunResult, timeoutMs: number): CallToolResult {
  return {
    content: [{ type: "text", text: describe(result, timeoutMs) }],
    structuredContent: { ...result },
    isError: result.timedOut,
  };
}

function describe(result: RunResult, timeoutMs: number): string {
  const status = result.timedOut
    ? `Timed out after ${timeoutMs} ms; the process group was killed. Partial output follows.`
    : result.signal !== null
      ? `Killed by ${result.signal} after ${result.durationMs} ms.`
      : `Exit code ${result.exitCode} after ${result.durationMs} ms.`;
  const parts = [status];
  if (result.truncated) parts.push("Output was truncated to the first 1 MiB of each stream.");
  if (result.stdout !== "") parts.push(`--- stdout ---\n${result.stdout}`);
  if (result.stderr !== "") parts.push(`--- stderr ---\n${result.stderr}`);
  if (result.stdout === "" && result.stderr === "") parts.push("(no output)");
  return parts.join("\n");
}
