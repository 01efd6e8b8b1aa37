/**
 * Content hashes that name cached artefacts, and atomic publication of those artefacts. An artefact's
 * file name carries the hash of everything that went into it, so "does the file exist" is the whole
 * cache check, and a changed input simply produces a new name.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";

/** Bump when the build code changes what it produces for the same inputs. */
export const IMAGE_BUILD_VERSION = "mcpvisor-image-1";

/** Hex length used in file names: 16 hex digits (64 bits) is plenty for a local cache. */
const NAME_HASH_LEN = 16;

export function sha256(data: string | Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Hash of a JSON-able value with sorted keys, so key order never changes a name. */
export function hashOf(value: unknown): string {
  return sha256(stableStringify(value)).slice(0, NAME_HASH_LEN);
}

function stableStringify(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableStringify).join(",")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableStringify(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

const fileHashMemo = new Map<string, string>();

/**
 * sha256 of a file's content, memoised per process by (path, size, mtime, inode). Measured: the 99 MB
 * node binary hashes in ~0.2 s from the page cache, cheap enough to be exact rather than trust mtimes.
 */
export async function hashFile(file: string): Promise<string> {
  const st = await fs.promises.stat(file);
  const key = `${file}:${st.size}:${st.mtimeMs}:${st.ino}`;
  const memo = fileHashMemo.get(key);
  if (memo) return memo;
  const hash = createHash("sha256");
  await new Promise<void>((resolve, reject) => {
    fs.createReadStream(file)
      .on("data", (c) => hash.update(c))
      .on("end", resolve)
      .on("error", reject);
  });
  const digest = hash.digest("hex");
  fileHashMemo.set(key, digest);
  return digest;
}

export function exists(p: string): boolean {
  return fs.existsSync(p);
}

/** A temporary sibling of `final`: same directory (so rename is atomic), unique per process and call. */
export function tempPathFor(final: string): string {
  return path.join(path.dirname(final), `.${path.basename(final)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
}

/**
 * Builds into a temporary path and renames it to `final` only when `build` succeeded, so an interrupted
 * build never leaves a half artefact under its final name. Works for files and directories.
 */
export async function publishAtomically(final: string, build: (tmp: string) => Promise<void>): Promise<void> {
  await fs.promises.mkdir(path.dirname(final), { recursive: true });
  const tmp = tempPathFor(final);
  try {
    await build(tmp);
    await fs.promises.rename(tmp, final);
  } catch (err) {
    await fs.promises.rm(tmp, { recursive: true, force: true });
    // Another builder may have published the same content first: theirs is as good as ours.
    const code = (err as NodeJS.ErrnoException).code;
    if (exists(final) && (code === "ENOTEMPTY" || code === "EEXIST")) return;
    throw err;
  }
}

/** Removes leftovers of interrupted builds (temporary siblings older than an hour) in `dir`. */
export async function sweepStaleTemps(dir: string, maxAgeMs = 3_600_000): Promise<void> {
  let names: string[];
  try {
    names = await fs.promises.readdir(dir);
  } catch {
    return;
  }
  const now = Date.now();
  for (const name of names) {
    if (!/^\..*\.tmp-\d+-/.test(name)) continue;
    const p = path.join(dir, name);
    try {
      const st = await fs.promises.lstat(p);
      if (now - st.mtimeMs > maxAgeMs) await fs.promises.rm(p, { recursive: true, force: true });
    } catch {
      // raced with another sweeper
    }
  }
}

export function formatBytes(n: number): string {
  if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(n >= 100 * 1024 * 1024 ? 0 : 1)} MB`;
  if (n >= 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${n} B`;
}

export function elapsed(startMs: number): string {
  return `${((Date.now() - startMs) / 1000).toFixed(1)} s`;
}
