import type { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { type LoggingLevel, LoggingLevelSchema, SetLevelRequestSchema } from "@modelcontextprotocol/sdk/types.js";

/** Severity order from the spec (RFC 5424), least severe first. */
const SEVERITY: readonly LoggingLevel[] = LoggingLevelSchema.options;

/**
 * The minimum level the client asked for with logging/setLevel. One process serves one client (stdio), so
 * one value is enough. Kept here rather than in the SDK's per-session map so that tools can ask `allows`
 * and still send their log lines with the request's own `sendNotification`.
 */
export class LogLevelGate {
  #minimum: LoggingLevel | undefined;

  /** Before any logging/setLevel every level is sent: the spec leaves the default to the server. */
  allows(level: LoggingLevel): boolean {
    return this.#minimum === undefined || SEVERITY.indexOf(level) >= SEVERITY.indexOf(this.#minimum);
  }

  /** Replaces the handler the SDK installs for the `logging` capability. */
  install(server: Server): void {
    server.setRequestHandler(SetLevelRequestSchema, (request) => {
      this.#minimum = request.params.level;
      return {};
    });
  }
}
