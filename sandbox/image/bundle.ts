/** esbuild bundles that go into guest images: the agent, and `bundle`-kind hosted servers. */
import * as path from "node:path";
import { build } from "esbuild";

/**
 * Bundled ESM has no `require`; CommonJS dependencies inside the bundle (and their dynamic requires of
 * node builtins) need one, so every bundle defines it up front.
 */
const REQUIRE_BANNER =
  'import { createRequire as __mcpvisorCreateRequire } from "node:module"; const require = __mcpvisorCreateRequire(import.meta.url);';

/** One self-contained node20 ESM file, built in memory (the caller hashes it, then writes it). */
export async function bundleEsm(entry: string, opts: { requireBanner: boolean }): Promise<Buffer> {
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    write: false,
    outfile: path.join(path.dirname(entry), "out.mjs"), // names the output only; nothing is written
    logLevel: "silent",
    legalComments: "none",
    ...(opts.requireBanner ? { banner: { js: REQUIRE_BANNER } } : {}),
  }).catch((err: unknown) => {
    throw new Error(`esbuild ${entry}: ${(err as Error).message}`);
  });
  const out = result.outputFiles.find((f) => f.path.endsWith(".mjs"));
  if (!out) throw new Error(`esbuild ${entry}: no output`);
  return Buffer.from(out.contents);
}

/** The guest agent (sandbox/agent/agent.ts); its DNS responder uses dns-packet, a CommonJS package. */
export function bundleAgent(repoRoot: string): Promise<Buffer> {
  return bundleEsm(path.join(repoRoot, "sandbox", "agent", "agent.ts"), { requireBanner: true });
}
