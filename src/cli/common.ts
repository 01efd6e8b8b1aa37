import { join } from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { resolveGatewayConfig, type GatewayConfig } from "../config/gateway.js";
import { REPO_ROOT } from "../main.js";

/** Options every command that runs sandboxes understands. */
export const COMMON_OPTIONS = {
  "cache-dir": { type: "string" },
  "servers-dir": { type: "string" },
  accel: { type: "string" },
  "log-level": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsConfig["options"];

export function parse<T extends NonNullable<ParseArgsConfig["options"]>>(argv: string[], options: T) {
  return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
}

export function configFrom(values: Record<string, unknown>, extra: Partial<GatewayConfig> = {}): GatewayConfig {
  return resolveGatewayConfig({
    serversDir: (values["servers-dir"] as string | undefined) ?? process.env.MCPVISOR_SERVERS_DIR ?? join(REPO_ROOT, "servers"),
    cacheDir: values["cache-dir"],
    accel: values.accel,
    logLevel: values["log-level"],
    ...extra,
  });
}

/** Progress goes to stderr with a prefix, so it never mixes with a command's output on stdout. */
export function progressPrinter(quiet = false): (line: string) => void {
  return quiet ? () => undefined : (line) => process.stderr.write(`[mcpvisor] ${line}\n`);
}
