import { z } from "zod";
import { DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS } from "./limits.js";

const timeoutMs = z
  .number()
  .int()
  .min(1)
  .max(MAX_TIMEOUT_MS)
  .default(DEFAULT_TIMEOUT_MS)
  .describe(`Wall-clock limit in milliseconds (default ${DEFAULT_TIMEOUT_MS}, at most ${MAX_TIMEOUT_MS}).`);

export const runInputShape = {
  command: z.string().min(1).describe("Shell command, run with /bin/sh -c in /tmp."),
  timeoutMs,
  stdin: z.string().optional().describe("Text written to the command's standard input."),
};

export const runJsInputShape = {
  code: z.string().min(1).describe("JavaScript, run as an ES module (top-level await works) in a fresh Node.js process."),
  timeoutMs,
};

export const runOutputShape = {
  stdout: z.string(),
  stderr: z.string(),
  exitCode: z.number().int().nullable().describe("null when the process was killed by a signal."),
  signal: z.string().nullable(),
  timedOut: z.boolean(),
  truncated: z.boolean().describe("Whether stdout or stderr went past 1 MiB; only the first 1 MiB of each is kept."),
  durationMs: z.number().int().nonnegative(),
};
