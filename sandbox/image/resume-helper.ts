/** Compiles guest/resume-helper.c into a static binary (the guest has no libc of its own for it). */
import * as fs from "node:fs";
import * as path from "node:path";
import { type BuildContext } from "./context.js";
import { run } from "./exec.js";
import { exists, hashOf, IMAGE_BUILD_VERSION, publishAtomically, sha256 } from "./hash.js";

export interface ResumeHelper {
  path: string;
  hash: string;
}

export async function ensureResumeHelper(ctx: BuildContext): Promise<ResumeHelper> {
  const src = path.join(ctx.repoRoot, "sandbox", "image", "guest", "resume-helper.c");
  const source = await fs.promises.readFile(src);
  const gcc = (await run("gcc", ["-dumpfullversion"])).stdout.trim();
  const hash = hashOf({ v: IMAGE_BUILD_VERSION, source: sha256(source), gcc });
  const out = path.join(ctx.cacheDir, "images", "bin", `resume-helper-${hash}`);
  if (exists(out)) return { path: out, hash };
  await publishAtomically(out, async (tmp) => {
    await run("gcc", ["-static", "-O2", "-Wall", "-Wextra", "-s", "-o", tmp, src]);
  });
  ctx.progress(`resume helper: compiled (${Math.round(fs.statSync(out).size / 1024)} KB)`);
  return { path: out, hash };
}
