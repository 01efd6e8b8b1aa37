import { parseArgs, type ParseArgsConfig } from "node:util";
import { createLogger, type Logger } from "../telemetry/log.js";
import { CONFIG_KEYS, flagName, isSwitch, resolveGatewayConfig, type ConfigKey, type GatewayConfig } from "../config/gateway.js";

type Options = NonNullable<ParseArgsConfig["options"]>;

/** parseArgs options for gateway settings, each its `flagName`: an on/off one takes no value. */
export function configOptions(keys: readonly ConfigKey[] = CONFIG_KEYS): Options {
  return Object.fromEntries(keys.map((key) => [flagName(key), { type: isSwitch(key) ? "boolean" : "string" }]));
}

/** Options every command that runs sandboxes understands. */
export const COMMON_OPTIONS = {
  ...configOptions(["cacheDir", "serversDir", "accel", "logLevel", "logFormat"]),
  help: { type: "boolean", short: "h" },
} as const satisfies Options;

export function parse<T extends Options>(argv: string[], options: T) {
  return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
}

/** The gateway settings from parsed flags (those named after a setting), `extra`, and the environment. */
export function configFrom(values: Record<string, unknown>, extra: Partial<GatewayConfig> = {}): GatewayConfig {
  const flags = Object.fromEntries(CONFIG_KEYS.map((key) => [key, values[flagName(key)]]));
  return resolveGatewayConfig({ ...flags, ...extra });
}

/**
 * The log of a command in the configured format. `quiet`: a one-off command (build, call) logs only
 * warnings at the default level, since its progress lines already say what happens.
 */
export function loggerFor(config: GatewayConfig, quiet = false): Logger {
  return createLogger(quiet && config.logLevel === "info" ? "warn" : config.logLevel, { format: config.logFormat });
}

/** Progress goes to stderr with a prefix, so it never mixes with a command's output on stdout. */
export function progressPrinter(quiet = false): (line: string) => void {
  return quiet ? () => undefined : (line) => process.stderr.write(`[mcpvisor] ${line}\n`);
}
