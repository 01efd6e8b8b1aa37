import { Redis } from "ioredis";

/** Every key the gateway keeps in Redis starts so; several clusters may share one Redis by database number. */
const PREFIX = "mcpvisor:";

/** The cluster's keys in one place, so that Lua scripts and TypeScript name them alike. */
export const keys = {
  prefix: PREFIX,
  /** Counter handing out node epochs: every node start or re-join gets a new one. */
  epochs: `${PREFIX}epochs`,
  /** Names of nodes that joined (some may be dead: their lease key tells). */
  nodes: `${PREFIX}nodes`,
  /** A node's lease: hash {epoch, url}, expiring unless renewed. */
  node: (id: string) => `${PREFIX}node:${id}`,
  /** A session's record: hash {tenant, route, state, owner, epoch, generation, record}. */
  session: (id: string) => `${PREFIX}session:${id}`,
  /** Saved (suspended) sessions, scored by when they were saved: all, and per tenant. */
  savedAll: `${PREFIX}saved`,
  savedOf: (tenant: string) => `${PREFIX}saved:${tenant}`,
  /** What a node holds of a tenant's quota (e.g. open sessions): hash tenant -> count, expiring with the node. */
  holds: (kind: string, node: string) => `${PREFIX}holds:${kind}:${node}`,
  /** A tenant's request-rate token bucket. */
  bucket: (tenant: string) => `${PREFIX}rate:${tenant}`,
  /** A build lock (guest images, a template). */
  lock: (name: string) => `${PREFIX}lock:${name}`,
};

/**
 * A Redis connection for the cluster. Commands fail fast rather than queue while Redis is away: a
 * request then gets a clear error at once, and a node that cannot renew its lease fences itself.
 */
export function connectRedis(url: string): Redis {
  return new Redis(url, {
    lazyConnect: true,
    connectTimeout: 2_000,
    commandTimeout: 2_000,
    maxRetriesPerRequest: 1,
    // Reconnect forever, at most every second: Redis coming back must heal the cluster by itself.
    retryStrategy: (attempt) => Math.min(attempt * 100, 1_000),
  });
}

export type { Redis };
