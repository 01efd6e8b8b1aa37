import { ConfigError } from "../config/gateway.js";
import { BUILD_USAGE, buildCommand } from "./build.js";
import { CALL_USAGE, callCommand } from "./call.js";
import { KEYS_USAGE, keysCommand } from "./keys.js";
import { START_USAGE, startCommand } from "./start.js";
import { STDIO_USAGE, stdioCommand } from "./stdio.js";

const COMMANDS: Record<string, (argv: string[]) => Promise<void>> = {
  start: startCommand,
  build: buildCommand,
  call: callCommand,
  stdio: stdioCommand,
  keys: keysCommand,
};

const USAGE = `mcpvisor: MCP servers in microVMs resumed from snapshots

${START_USAGE}

${BUILD_USAGE}

${CALL_USAGE}

${STDIO_USAGE}

${KEYS_USAGE}`;

export async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  const command = name ? COMMANDS[name] : undefined;
  if (!command) {
    console.log(USAGE);
    process.exitCode = name && name !== "help" && name !== "--help" ? 2 : 0;
    return;
  }
  try {
    await command(rest);
  } catch (err) {
    // Configuration mistakes are the user's to fix: say what is wrong, without a stack trace.
    if (err instanceof ConfigError || (err as { code?: string }).code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
      console.error(`mcpvisor ${name}: ${(err as Error).message}`);
      process.exit(2);
    }
    throw err;
  }
}
