import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import { keys, type Redis } from "./redis.js";

const LOCK_MS = 30_000;
const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`;
const UNLOCK = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

/** Runs builds one at a time: in this process, or across the cluster. */
export interface BuildLocks {
  exclusive<T>(name: string, build: () => Promise<T>): Promise<T>;
}

/** One node: nothing else builds into this node's cache. */
export const LOCAL_BUILDS: BuildLocks = { exclusive: (_name, build) => build() };

/**
 * Cluster-wide build locks in Redis, so that what every node shares (guest images, each template) is
 * built once: the others wait, then find it built. A lock is renewed while its build runs and lapses
 * `LOCK_MS` after its node died, so a crashed build does not block the cluster.
 */
export class ClusterBuildLocks implements BuildLocks {
  constructor(
    private readonly redis: Redis,
    private readonly nodeId: string,
    private readonly log: Logger,
  ) {}

  async exclusive<T>(name: string, build: () => Promise<T>): Promise<T> {
    const key = keys.lock(name);
    const token = `${this.nodeId}:${randomUUID()}`;
    let waited = false;
    while ((await this.redis.set(key, token, "PX", LOCK_MS, "NX")) !== "OK") {
      if (!waited) this.log.info({ lock: name, holder: await this.redis.get(key) }, "another node builds this; waiting for it");
      waited = true;
      await new Promise((r) => setTimeout(r, 500));
    }
    const renew = setInterval(() => void this.redis.eval(RENEW, 1, key, token, String(LOCK_MS)).catch(() => undefined), LOCK_MS / 3);
    try {
      return await build();
    } finally {
      clearInterval(renew);
      await this.redis.eval(UNLOCK, 1, key, token).catch(() => undefined);
    }
  }
}
