import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { KeyEntry } from "./tenants-file.js";

/** Keys mcpvisor issues start with this, so a leaked one is recognisable (and scanners can find it). */
export const KEY_PREFIX = "mcpv_";

export function hashKey(key: string): string {
  return createHash("sha256").update(key, "utf8").digest("hex");
}

/** A new random key (256 bits) and the hash that goes in the tenants file. */
export function generateKey(): { key: string; sha256: string } {
  const key = KEY_PREFIX + randomBytes(32).toString("base64url");
  return { key, sha256: hashKey(key) };
}

/**
 * The API keys of the tenants file. Only hashes are held; a presented key is hashed and compared with
 * every entry in constant time, without stopping at a match, so timing tells nothing about which hash
 * (or how much of one) matched.
 */
export class ApiKeys {
  private readonly entries: Array<{ entry: KeyEntry; hash: Buffer }>;

  constructor(entries: readonly KeyEntry[]) {
    this.entries = entries.map((entry) => ({ entry, hash: Buffer.from(entry.sha256, "hex") }));
  }

  get size(): number {
    return this.entries.length;
  }

  /** Whether a key with this hash is still issued to `tenant` (no secret is compared here, only hashes on file). */
  holds(sha256: string, tenant: string): boolean {
    return this.entries.some(({ entry }) => entry.sha256 === sha256 && entry.tenant === tenant);
  }

  find(presented: string): KeyEntry | undefined {
    const hash = Buffer.from(hashKey(presented), "hex");
    let found: KeyEntry | undefined;
    for (const { entry, hash: known } of this.entries) {
      if (timingSafeEqual(hash, known)) found ??= entry;
    }
    return found;
  }
}
