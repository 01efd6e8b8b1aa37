import { QuotaError, type QuotaKind } from "../tenancy/quota-error.js";
import type { TenantHolds } from "../tenancy/tenant-counter.js";
import type { NodeLease } from "./node-lease.js";
import { inCluster } from "./errors.js";
import { keys, type Redis } from "./redis.js";

/**
 * KEYS: this node's holds. ARGV: tenant, limit, holds-key prefix (…:<node>), node-key prefix.
 * Sums the tenant's holds over the nodes whose lease lives (a dead node's holds go with it), then takes one.
 */
const TAKE = `
local held = 0
for _, node in ipairs(redis.call('SMEMBERS', '${keys.nodes}')) do
  if redis.call('EXISTS', ARGV[4] .. node) == 1 then
    held = held + tonumber(redis.call('HGET', ARGV[3] .. node, ARGV[1]) or '0')
  else
    redis.call('SREM', '${keys.nodes}', node)
    redis.call('DEL', ARGV[3] .. node)
  end
end
if held >= tonumber(ARGV[2]) then return {0, held} end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return {1, held + 1}`;

const RELEASE = `
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if left <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return left`;

const COUNT = `
local held = 0
for _, node in ipairs(redis.call('SMEMBERS', '${keys.nodes}')) do
  if redis.call('EXISTS', ARGV[3] .. node) == 1 then held = held + tonumber(redis.call('HGET', ARGV[2] .. node, ARGV[1]) or '0') end
end
return held`;

/**
 * What tenants hold of one quota (open sessions) across the cluster. Each node keeps its own holds in a
 * hash that expires with its lease (renewed with it), so a node that dies gives its holds back.
 */
export class ClusterHolds implements TenantHolds {
  constructor(
    private readonly redis: Redis,
    private readonly lease: NodeLease,
    private readonly kind: QuotaKind,
    /** What is counted, for messages: "open sessions". */
    private readonly what: string,
  ) {}

  async count(tenant: string): Promise<number> {
    return Number(await this.redis.eval(COUNT, 0, tenant, keys.holds(this.kind, ""), keys.node("")));
  }

  async take(tenant: string, limit: number): Promise<() => void> {
    const mine = keys.holds(this.kind, this.lease.nodeId);
    const limitText = Number.isFinite(limit) ? String(limit) : "1e18";
    const [taken, held] = (await inCluster(`counting ${this.what}`, () => this.redis.eval(TAKE, 1, mine, tenant, limitText, keys.holds(this.kind, ""), keys.node("")))) as [number, number];
    if (taken !== 1) {
      throw new QuotaError(this.kind, `Tenant '${tenant}' has ${held} ${this.what} across the cluster, its limit; end one (e.g. DELETE a session) before opening another`);
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      void this.redis.eval(RELEASE, 1, mine, tenant).catch(() => undefined);
    };
  }
}
