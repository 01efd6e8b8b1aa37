import { readFileSync } from "node:fs";

/** `${NAME}` (an environment variable of the gateway) or `${file:/absolute/path}` (a secret file). */
export const SECRET_REFERENCE = /\$\{(?:file:\/[^}]+|[A-Za-z_][A-Za-z0-9_]*)\}/;
const REFERENCES = new RegExp(SECRET_REFERENCE.source, "g");

export class MissingSecretError extends Error {}

/**
 * The value of a credential: its references replaced by the gateway's environment or a file's content
 * (trailing newline removed). Resolved once at start, so a missing secret stops the start instead of
 * failing a call later; the result never leaves the gateway process.
 */
export function resolveSecret(template: string, env: NodeJS.ProcessEnv): string {
  return template.replace(REFERENCES, (reference) => {
    const inner = reference.slice(2, -1);
    if (inner.startsWith("file:")) {
      const path = inner.slice("file:".length);
      try {
        return readFileSync(path, "utf8").replace(/\r?\n$/, "");
      } catch (err) {
        throw new MissingSecretError(`cannot read the secret file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
    const value = env[inner];
    if (value === undefined || value === "") throw new MissingSecretError(`the environment variable ${inner} is not set in the gateway's environment`);
    return value;
  });
}
