import { pino, type Logger } from "pino";

/** JSON lines on stderr (stdout belongs to the stdio face and to CLI output). */
export function createLogger(level: string): Logger {
  return pino({ level, base: { service: "mcpvisor" } }, pino.destination(2));
}

export type { Logger };
