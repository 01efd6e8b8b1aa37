import type { Claim, SessionRecords } from "../router/session-records.js";
import { DisownedError } from "../router/session-records.js";
import { StoredSessionSchema, type StoredSession } from "../router/session-store.js";
import type { NodeLease } from "./node-lease.js";
import { keys, type Redis } from "./redis.js";

/**
 * Each script checks first that the calling node still holds its lease under the epoch it names
 * (KEYS[2] is its lease), so a node that was stopped past its lease and woke up cannot change anything.
 * Then it checks the session's owner, epoch and generation as the operation needs: every change is one
 * compare-and-set, atomic in Redis.
 */
const LEASE_CHECK = `
if redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[2] then return {'fenced'} end
local owner = redis.call('HGET', KEYS[1], 'owner')
local state = redis.call('HGET', KEYS[1], 'state')
local mine = owner == ARGV[1] and redis.call('HGET', KEYS[1], 'epoch') == ARGV[2]
`;

/** KEYS: session, lease, saved, savedOf(tenant). ARGV: node, epoch, tenant, route, id. */
const RUNNING = `${LEASE_CHECK}
if state and not mine and state == 'running' then return {'disowned', owner} end
if state and (redis.call('HGET', KEYS[1], 'tenant') ~= ARGV[3] or redis.call('HGET', KEYS[1], 'route') ~= ARGV[4]) then return {'disowned', 'another session'} end
if state == 'saved' and not mine then return {'disowned', 'saved by another node'} end
redis.call('HSET', KEYS[1], 'state', 'running', 'owner', ARGV[1], 'epoch', ARGV[2], 'tenant', ARGV[3], 'route', ARGV[4])
redis.call('HDEL', KEYS[1], 'record')
redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('ZREM', KEYS[3], ARGV[5])
redis.call('ZREM', KEYS[4], ARGV[5])
return {'ok'}`;

/** KEYS: session, lease, saved, savedOf(tenant). ARGV: node, epoch, record, savedAtMs, id. */
const SAVE = `${LEASE_CHECK}
if not mine or state ~= 'running' then return {'disowned', owner or 'nobody'} end
redis.call('HSET', KEYS[1], 'state', 'saved', 'record', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
return {'ok'}`;

/**
 * KEYS: session, lease, saved, savedOf(tenant). ARGV: node, epoch, tenant, route, id, node-key prefix.
 * A saved session becomes this node's; a running one is answered with its owner while the owner's lease
 * (under the epoch it ran the session with) lives, and is deleted once it does not.
 */
const CLAIM = `${LEASE_CHECK}
if not state or redis.call('HGET', KEYS[1], 'tenant') ~= ARGV[3] or redis.call('HGET', KEYS[1], 'route') ~= ARGV[4] then return {'none'} end
if state == 'saved' then
  redis.call('HSET', KEYS[1], 'state', 'running', 'owner', ARGV[1], 'epoch', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'generation', 1)
  redis.call('ZREM', KEYS[3], ARGV[5])
  redis.call('ZREM', KEYS[4], ARGV[5])
  return {'saved', redis.call('HGET', KEYS[1], 'record')}
end
if mine then return {'mine'} end
local ownerKey = ARGV[6] .. owner
if redis.call('HGET', ownerKey, 'epoch') == redis.call('HGET', KEYS[1], 'epoch') then
  return {'elsewhere', owner, redis.call('HGET', ownerKey, 'url')}
end
redis.call('DEL', KEYS[1])
return {'none'}`;

/**
 * KEYS: session, lease, saved. ARGV: node, epoch, id, savedOf prefix, max saved-at (or '+inf').
 * Deletes a saved session (nobody runs it, and it was saved no later than the bound), or one this node runs.
 */
const DELETE = `${LEASE_CHECK}
if not state then return {'none'} end
if state == 'running' and not mine then return {'running'} end
local tenant = redis.call('HGET', KEYS[1], 'tenant')
local record = redis.call('HGET', KEYS[1], 'record')
if state == 'saved' and ARGV[5] ~= '+inf' then
  local at = redis.call('ZSCORE', KEYS[3], ARGV[3])
  if at and tonumber(at) > tonumber(ARGV[5]) then return {'kept'} end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('ZREM', ARGV[4] .. tenant, ARGV[3])
if state == 'saved' then return {'saved', record} end
return {'ok'}`;

type Reply = [string, ...(string | null)[]];

/**
 * Session records in the cluster's Redis (docs/design/cluster.md): which node runs a session, or the
 * record of its saved sandboxes that any node may revive. Every write is checked against this node's
 * lease; a refused write throws DisownedError, and the session leaves this node.
 */
export class SessionDirectory implements SessionRecords {
  readonly handsOffSaved = true;

  constructor(
    private readonly redis: Redis,
    private readonly lease: NodeLease,
  ) {}

  private async run(script: string, sessionId: string, tenantKey: string, args: string[]): Promise<Reply> {
    const { nodeId, epoch } = this.lease;
    return (await this.redis.eval(script, 4, keys.session(sessionId), keys.node(nodeId), keys.savedAll, tenantKey, nodeId, epoch, ...args)) as Reply;
  }

  private refused(reply: Reply, id: string): never {
    throw new DisownedError(reply[0] === "fenced" ? `this node's lease was lost; session ${id} is not its to change` : `session ${id} is not this node's any more (${reply[1] ?? "?"})`);
  }

  async running(id: string, tenant: string, route: string): Promise<void> {
    const reply = await this.run(RUNNING, id, keys.savedOf(tenant), [tenant, route, id]);
    if (reply[0] !== "ok") this.refused(reply, id);
  }

  async save(record: StoredSession): Promise<void> {
    const reply = await this.run(SAVE, record.id, keys.savedOf(record.tenant), [JSON.stringify(record), String(Date.parse(record.savedAt) || Date.now()), record.id]);
    if (reply[0] !== "ok") this.refused(reply, record.id);
  }

  async claim(id: string, tenant: string, route: string): Promise<Claim> {
    const reply = await this.run(CLAIM, id, keys.savedOf(tenant), [tenant, route, id, keys.node("")]);
    switch (reply[0]) {
      case "saved": {
        const parsed = StoredSessionSchema.safeParse(parseJson(reply[1] ?? ""));
        // A record that does not parse cannot bring the session back: it is as good as none.
        if (parsed.success) return { kind: "saved", record: parsed.data };
        await this.delete(id);
        return { kind: "none" };
      }
      case "elsewhere":
        return { kind: "elsewhere", node: reply[1]!, url: reply[2]! };
      case "fenced":
        this.refused(reply, id);
      default:
        // "mine": the record says this node runs it, yet nothing here does (this node was restarted
        // under its old name and epoch cannot be: each start has a new one). Nothing to revive.
        return { kind: "none" };
    }
  }

  async delete(id: string): Promise<StoredSession | undefined> {
    return this.deleteSaved(id, "+inf");
  }

  private async deleteSaved(id: string, savedNoLaterThan: string): Promise<StoredSession | undefined> {
    const { nodeId, epoch } = this.lease;
    const reply = (await this.redis.eval(DELETE, 3, keys.session(id), keys.node(nodeId), keys.savedAll, nodeId, epoch, id, keys.savedOf(""), savedNoLaterThan)) as Reply;
    if (reply[0] === "fenced") this.refused(reply, id);
    if (reply[0] !== "saved") return undefined;
    const parsed = StoredSessionSchema.safeParse(parseJson(reply[1] ?? ""));
    return parsed.success ? parsed.data : undefined;
  }

  countFor(tenant: string): Promise<number> {
    return this.redis.zcard(keys.savedOf(tenant));
  }

  async oldestOf(tenant: string): Promise<string | undefined> {
    return (await this.redis.zrange(keys.savedOf(tenant), 0, 0))[0];
  }

  async expire(maxAgeMs: number): Promise<StoredSession[]> {
    const cutoff = Date.now() - maxAgeMs;
    const ids = await this.redis.zrangebyscore(keys.savedAll, "-inf", cutoff);
    const expired: StoredSession[] = [];
    for (const id of ids) {
      const record = await this.deleteSaved(id, String(cutoff));
      if (record) expired.push(record);
    }
    return expired;
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

