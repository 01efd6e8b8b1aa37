import { stat } from "node:fs/promises";
import { createRuntime } from "../main.js";
import { COMMON_OPTIONS, configFrom, loggerFor, parse, progressPrinter } from "./common.js";

export const BUILD_USAGE = `mcpvisor build [server...] [--cache-dir D] [--accel auto|kvm|tcg]
  Builds the guest images and the template snapshot of each server, or of each group of servers sharing
  a sandbox (all servers when none is named),
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
    for (const unit of runtime.units) {
      const servers = unit.members.map((m) => m.name).join(", ");
      const label = unit.members.length > 1 || unit.name !== unit.members[0]!.name ? `${unit.name} (${servers})` : unit.name;
      try {
        const meta = await runtime.pool.template(unit.members[0]!.name);
        const ram = await stat(`${config.cacheDir}/templates/${meta.server}/${meta.key}/ram`);
        progress(
          `${label}: template ${meta.key} ready; RAM file ${mib(ram.size)} MiB (${mib(ram.blocks * 512)} MiB on disk), ` +
            `cold boot ${meta.timings.bootMs} ms + initialize and warm-up ${meta.timings.warmupMs} ms`,
        );
      } catch (err) {
        failed = true;
        progress(`${label}: FAILED: ${(err as Error).message}`);
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
