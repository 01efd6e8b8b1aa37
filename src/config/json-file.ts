import type { z } from "zod";
import { ConfigError } from "./gateway.js";

/**
 * A configuration file's JSON text, validated against `schema`. A mistake names the file and every
 * field that is wrong, so it can be fixed in one go.
 */
export function parseJsonFile<S extends z.ZodType>(schema: S, path: string, text: string, what: string): z.output<S> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${path}: not valid JSON (${(err as Error).message})`);
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw new ConfigError(`${path}: invalid ${what}: ${issues}`);
  }
  return parsed.data;
}
