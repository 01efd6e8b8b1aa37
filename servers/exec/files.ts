/**
 * Files in and out of the sandbox: `upload` writes a file (or unpacks a .tar.gz archive) under the work
 * directory, `download` reads one back (a directory as a .tar.gz archive). Both carry base64 in the
 * tool call, so both are capped well under the gateway's request and message limits.
 */
import { spawn } from "node:child_process";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { dirname, resolve, sep } from "node:path";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { WORK_DIR } from "./limits.js";

/** Decoded bytes per upload: its base64 (4/3 larger) stays under the gateway's 4 MiB request body. */
export const UPLOAD_CAP_BYTES = 2 * 1024 * 1024;
/** Decoded bytes per download: its base64 stays well under the agent channel's 16 MiB frame. */
export const DOWNLOAD_CAP_BYTES = 4 * 1024 * 1024;

class FileToolError extends Error {}

const MiB = (n: number) => `${(n / 1024 / 1024).toFixed(n % (1024 * 1024) ? 1 : 0)} MiB`;

/** `path` as an absolute path inside the work directory, or a FileToolError saying where files may go. */
function insideWorkDir(path: string): string {
  const full = resolve(WORK_DIR, path);
  if (full !== WORK_DIR && !full.startsWith(WORK_DIR + sep)) throw new FileToolError(`'${path}' is outside ${WORK_DIR}, the only writable place in the sandbox`);
  return full;
}

function failure(message: string): CallToolResult {
  return { content: [{ type: "text", text: message }], isError: true };
}

/** Runs busybox tar with `input` on stdin; resolves with its stdout. */
function tar(args: string[], input?: Buffer): Promise<Buffer> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn("tar", args, { stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    child.stdout.on("data", (c: Buffer) => {
      size += c.length;
      if (size > DOWNLOAD_CAP_BYTES) child.kill("SIGKILL");
      else out.push(c);
    });
    child.stderr.on("data", (c: Buffer) => err.push(c));
    child.on("error", reject);
    child.on("close", (code) => {
      if (size > DOWNLOAD_CAP_BYTES) reject(new FileToolError(`the archive is over ${MiB(DOWNLOAD_CAP_BYTES)}, the cap per download; download its parts`));
      else if (code !== 0) reject(new FileToolError(`tar failed: ${Buffer.concat(err).toString("utf8").trim() || `exit ${code}`}`));
      else resolvePromise(Buffer.concat(out));
    });
    child.stdin.on("error", () => undefined);
    child.stdin.end(input);
  });
}

export async function upload(args: { path: string; contentBase64: string; archive: boolean }): Promise<CallToolResult> {
  try {
    const target = insideWorkDir(args.path);
    const data = Buffer.from(args.contentBase64, "base64");
    if (data.length > UPLOAD_CAP_BYTES) throw new FileToolError(`the upload is ${data.length} bytes, over the cap of ${MiB(UPLOAD_CAP_BYTES)} per upload; send it in parts`);
    if (args.archive) {
      await mkdir(target, { recursive: true });
      await tar(["-xzf", "-", "-C", target], data);
      const listed = (await tar(["-tzf", "-"], data)).toString("utf8").split("\n").filter(Boolean).length;
      return { content: [{ type: "text", text: `Unpacked ${listed} entries (${data.length} bytes of archive) into ${target}.` }], structuredContent: { path: target, bytes: data.length, entries: listed } };
    }
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, data);
    return { content: [{ type: "text", text: `Wrote ${data.length} bytes to ${target}.` }], structuredContent: { path: target, bytes: data.length, entries: 1 } };
  } catch (err) {
    return failure(err instanceof FileToolError ? err.message : `upload failed: ${(err as Error).message}`);
  }
}

export async function download(args: { path: string }): Promise<CallToolResult> {
  try {
    const target = insideWorkDir(args.path);
    const info = await stat(target).catch(() => {
      throw new FileToolError(`'${args.path}' does not exist`);
    });
    let data: Buffer;
    let archive = false;
    if (info.isDirectory()) {
      data = await tar(["-czf", "-", "-C", target, "."]);
      archive = true;
    } else {
      if (info.size > DOWNLOAD_CAP_BYTES) throw new FileToolError(`${target} is ${info.size} bytes, over the cap of ${MiB(DOWNLOAD_CAP_BYTES)} per download`);
      data = await readFile(target);
    }
    const what = archive ? `a .tar.gz archive of ${target}` : target;
    return {
      content: [{ type: "text", text: `${what}: ${data.length} bytes, base64 in structuredContent.contentBase64.` }],
      structuredContent: { path: target, bytes: data.length, archive, contentBase64: data.toString("base64") },
    };
  } catch (err) {
    return failure(err instanceof FileToolError ? err.message : `download failed: ${(err as Error).message}`);
  }
}
