import { z } from "zod";
import { DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS, WORK_DIR } from "./limits.js";

const timeoutMs = z
  .number()
  .int()
  .min(1)
  .max(MAX_TIMEOUT_MS)
  .default(DEFAULT_TIMEOUT_MS)
  .describe(`Wall-clock limit in milliseconds (default ${DEFAULT_TIMEOUT_MS}, at most ${MAX_TIMEOUT_MS}).`);

export const runInputShape = {
  command: z.string().min(1).describe(`Shell command, run with /bin/sh -c in ${WORK_DIR}.`),
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

export const uploadInputShape = {
  path: z.string().min(1).describe(`Where to write, absolute or relative to ${WORK_DIR}; for an archive, the directory to unpack into.`),
  contentBase64: z.string().describe("The file's bytes (or the .tar.gz archive's), base64; at most 2 MiB decoded."),
  archive: z.boolean().default(false).describe("The content is a .tar.gz archive to unpack at `path`."),
};

export const downloadInputShape = {
  path: z.string().min(1).describe(`A file, or a directory (returned as a .tar.gz archive), under ${WORK_DIR}; at most 4 MiB.`),
};

export const uploadOutputShape = {
  path: z.string(),
  bytes: z.number().int().nonnegative(),
  entries: z.number().int().nonnegative(),
};

export const downloadOutputShape = {
  path: z.string(),
  bytes: z.number().int().nonnegative(),
  archive: z.boolean(),
  contentBase64: z.string(),
};

export const startInputShape = {
  command: z.string().min(1).describe(`Shell command left running in the background (a dev server, a watch), with /bin/sh -c in ${WORK_DIR}.`),
};

export const startOutputShape = {
  id: z.number().int().describe("Pass it to `output` and `stop`."),
  pid: z.number().int(),
};

export const jobInputShape = {
  id: z.number().int().describe("What `start` returned."),
};

export const jobOutputShape = {
  id: z.number().int(),
  command: z.string(),
  running: z.boolean(),
  exitCode: z.number().int().nullable(),
  signal: z.string().nullable(),
  stdout: z.string().describe("What it wrote since the last `output` (at most the last 256 KiB)."),
  stderr: z.string(),
  droppedBytes: z.number().int().nonnegative().describe("Output lost because it was not read in time."),
};
