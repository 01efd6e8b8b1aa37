import { stat } from "node:fs/promises";
import { createRuntime } from "../main.js";
import { COMMON_OPTIONS, configFrom, loggerFor, parse, progressPrinter } from "./common.js";

export const BUILD_USAGE = `mcpvisor build [server...] [--cache-dir D] [--accel auto|kvm|tcg]
  Builds the guest images and each server's template snapshot (all servers when none is named),
  printing progress and sizes. Nothing is rebuilt when its inputs did not change.`;

export async function buildCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, COMMON_OPTIONS);
  if (values.help) return void console.log(BUILD_USAGE);
  const config = configFrom(values, { servers: positionals });
  const progress = progressPrinter();
  const runtime = await createRuntime(config, loggerFor(config, true), progress, {
    pool: { prestarted: 0, warm: 0 },
  });
  let failed = false;
  try {
    for (const manifest of runtime.manifests) {
      try {
        const meta = await runtime.pool.template(manifest.name);
        const ram = await stat(`${config.cacheDir}/templates/${manifest.name}/${meta.key}/ram`);
        progress(
          `${manifest.name}: template ${meta.key} ready; RAM file ${mib(ram.size)} MiB (${mib(ram.blocks * 512)} MiB on disk), ` +
            `cold boot ${meta.timings.bootMs} ms + initialize and warm-up ${meta.timings.warmupMs} ms`,
        );
      } catch (err) {
        failed = true;
        progress(`${manifest.name}: FAILED: ${(err as Error).message}`);
      }
    }
  } finally {
    await runtime.close();
  }
  if (failed) process.exitCode = 1;
}

function mib(bytes: number): string {
  return (bytes / 1024 / 1024).toFixed(1);
}
