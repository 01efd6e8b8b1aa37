import { pino, type DestinationStream, type Logger } from "pino";
import { prettyFactory } from "pino-pretty";
import type { GatewayConfig } from "../config/gateway.js";

/**
 * Fields that carry secrets wherever they appear (up to two levels deep): their values are replaced
 * before a line is written. Values known to be secret (manifest env vars) are scrubbed from the whole
 * line as well, by `registerSecret`, so they cannot leak through an error message or a stderr tail.
 */
const SECRET_KEYS = [
  "authorization",
  "Authorization",
  "cookie",
  "Cookie",
  '"set-cookie"',
  '"x-api-key"',
  '"proxy-authorization"',
  "token",
  "accessToken",
  "access_token",
  "refreshToken",
  "refresh_token",
  "idToken",
  "apiKey",
  "api_key",
  "password",
  "passwd",
  "secret",
  "clientSecret",
  "client_secret",
  "privateKey",
  "env",
];
export const REDACT_PATHS = SECRET_KEYS.flatMap((key) => {
  const step = key.startsWith('"') ? `[${key}]` : `.${key}`;
  return [key.startsWith('"') ? `[${key}]` : key, `*${step}`, `*.*${step}`];
});
export const REDACTED = "[REDACTED]";

/** Env var names treated as secret in any manifest, besides those a manifest lists itself. */
// AUTH as a word of the name (GITHUB_AUTH, AUTH_HEADER), not inside one (GIT_AUTHOR_NAME is no secret).
const SECRET_ENV_NAME = /TOKEN|SECRET|PASSW(OR)?D|API_?KEY|PRIVATE_?KEY|CREDENTIAL|(^|_)AUTH(_|$)/i;
/** Shorter values are not scrubbed from lines: "1" or "on" would blank out unrelated text. */
const MIN_SECRET_LENGTH = 4;

const secrets = new Set<string>();

/** Never writes `value` to any log line from now on (as it is, or as it looks inside a JSON string). */
export function registerSecret(value: string): void {
  if (value.length < MIN_SECRET_LENGTH) return;
  secrets.add(value);
  const escaped = JSON.stringify(value).slice(1, -1);
  if (escaped !== value) secrets.add(escaped);
}

/**
 * Registers the secret env values of manifests: the names a manifest lists in `secretEnv` (when the
 * schema has it), and any whose name looks like a credential (TOKEN, SECRET, PASSWORD, API_KEY, ...).
 */
export function registerManifestSecrets(manifests: readonly { env?: Record<string, string>; secretEnv?: unknown }[]): void {
  for (const manifest of manifests) {
    const listed = new Set(Array.isArray(manifest.secretEnv) ? manifest.secretEnv.filter((n): n is string => typeof n === "string") : []);
    for (const [name, value] of Object.entries(manifest.env ?? {})) {
      if (listed.has(name) || SECRET_ENV_NAME.test(name)) registerSecret(value);
    }
  }
}

export function scrubSecrets(line: string): string {
  for (const secret of secrets) if (line.includes(secret)) line = line.split(secret).join(REDACTED);
  return line;
}

export interface LoggerOptions {
  /** JSON lines or human-readable ones; default `auto`: readable when stderr is a terminal. */
  format?: GatewayConfig["logFormat"];
  /** Where lines go; default stderr (stdout belongs to the stdio face and to CLI output). */
  destination?: { write(line: string): unknown };
}

/** JSON lines on stderr, pretty on a terminal; secret fields and registered secret values never written. */
export function createLogger(level: string, options: LoggerOptions = {}): Logger {
  const { format = "auto" } = options;
  const sink = options.destination ?? pino.destination(2);
  const pretty = format === "pretty" || (format === "auto" && process.stderr.isTTY === true);
  const prettify = pretty ? prettyFactory({ colorize: options.destination ? false : process.stderr.isTTY === true, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname,service" }) : undefined;
  const stream: DestinationStream & { flush?: (cb?: (err?: Error) => void) => void } = {
    write(line: string) {
      const clean = secrets.size ? scrubSecrets(line) : line;
      sink.write(prettify ? prettify(JSON.parse(clean)) : clean);
    },
  };
  const flushable = sink as { flush?: (cb?: (err?: Error) => void) => void };
  if (typeof flushable.flush === "function") stream.flush = (cb) => flushable.flush!(cb);
  return pino({ level, base: { service: "mcpvisor" }, redact: { paths: REDACT_PATHS, censor: REDACTED } }, stream);
}

export type { Logger };
