import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { open, rename, rm } from "node:fs/promises";
import type { Writable } from "node:stream";
import { finished } from "node:stream/promises";

/**
 * Writes `path` so that it either holds everything `fill` wrote or is left as it was: `fill` writes
 * (and ends) a stream to a temporary file beside it, which is fsynced and then renamed over `path`. A
 * crash or a failed `fill` never leaves a half-written state file that a later resume would load.
 */
export async function writeAtomically<T>(path: string, fill: (out: Writable) => Promise<T>): Promise<{ result: T; bytes: number }> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    const out = createWriteStream(tmp);
    // Opening fails (a missing directory, a full disk) before `fill` starts pulling from its source.
    await new Promise((resolve, reject) => out.once("open", resolve).once("error", reject));
    const result = await fill(out);
    await finished(out);
    const file = await open(tmp, "r");
    try {
      await file.sync();
      const { size } = await file.stat();
      await rename(tmp, path);
      return { result, bytes: size };
    } finally {
      await file.close();
    }
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
