import type { Logger } from "pino";
import { events } from "../telemetry/events.js";
import { keys, type Redis } from "./redis.js";

/** Renews the lease if it is still this node's epoch; also keeps the node's quota holds alive with it. */
const RENEW = `
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
for i = 2, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return 1`;

/** Gives the lease up, if it is still this epoch's. */
const RELEASE = `
if redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('SREM', KEYS[2], ARGV[2])
return 1`;

export interface NodeLeaseOptions {
  nodeId: string;
  /** Where other nodes forward this node's sessions' requests. */
  url: string;
  leaseMs: number;
  log: Logger;
  /** Keys that live as long as the lease (this node's quota holds): renewed with it. */
  companions: string[];
}

/**
 * This node's membership of the cluster: a Redis key that expires `leaseMs` after its last renewal, with
 * an epoch no other node or earlier start of this one ever had. Every change to a session record checks
 * the epoch (docs/design/cluster.md, fencing). Locally the lease counts as held only until a quarter of
 * `leaseMs` before Redis would drop it, measured from when the last renewal was sent: a node that
 * cannot renew (Redis away, the process stopped) stops its sessions before anyone may take them over.
 */
export class NodeLease {
  private epochValue = "";
  private validUntil = 0;
  private timer: NodeJS.Timeout | undefined;
  private fencing: Promise<void> | undefined;
  private closed = false;
  private renewing = false;
  private readonly lostListeners: (() => Promise<void>)[] = [];

  constructor(
    private readonly redis: Redis,
    private readonly options: NodeLeaseOptions,
  ) {}

  get nodeId(): string {
    return this.options.nodeId;
  }

  /** This node's epoch now (changes when it re-joins after being fenced). */
  get epoch(): string {
    return this.epochValue;
  }

  /** Whether this node may act on its sessions now. */
  held(): boolean {
    return this.fencing === undefined && !this.closed && performance.now() < this.validUntil;
  }

  /** Called, awaited, when the lease is lost: the node must drop every session it runs. */
  onLost(listener: () => Promise<void>): void {
    this.lostListeners.push(listener);
  }

  async join(): Promise<void> {
    const { nodeId, url, leaseMs } = this.options;
    const sent = performance.now();
    const epoch = String(await this.redis.incr(keys.epochs));
    await this.redis.multi().del(keys.node(nodeId)).hset(keys.node(nodeId), { epoch, url }).pexpire(keys.node(nodeId), leaseMs).sadd(keys.nodes, nodeId).exec();
    this.epochValue = epoch;
    this.validUntil = sent + leaseMs * 0.75;
    this.options.log.info({ node: nodeId, epoch, url, leaseMs }, "joined the cluster");
    this.timer ??= setInterval(() => void this.tick(), Math.max(100, Math.floor(leaseMs / 5)));
  }

  /** Renews, or fences this node when the lease is no longer held (checked first: after a SIGSTOP, say). */
  private async tick(): Promise<void> {
    if (this.fencing || this.closed) return;
    if (!this.held()) return this.fence("the lease ran out before it could be renewed");
    // One renewal at a time: while Redis stalls, ticks only check the lease, they do not pile up requests.
    if (this.renewing) return;
    this.renewing = true;
    const { nodeId, leaseMs, companions } = this.options;
    const sent = performance.now();
    try {
      const renewed = await this.redis.eval(RENEW, 1 + companions.length, keys.node(nodeId), ...companions, this.epochValue, String(leaseMs));
      if (renewed === 1) this.validUntil = sent + leaseMs * 0.75;
      else await this.fence("the lease was lost (it expired, and the node was declared gone)");
    } catch (err) {
      this.options.log.warn({ err: (err as Error).message }, "could not renew the node lease; retrying");
    } finally {
      this.renewing = false;
    }
  }

  /** Ends what this node runs, then joins again under a new epoch. */
  fence(why: string): Promise<void> {
    this.fencing ??= (async () => {
      this.options.log.error({ node: this.options.nodeId, epoch: this.epochValue, why }, "node fenced: ending every session it runs");
      events.cluster.publish({ kind: "fenced" });
      for (const listener of this.lostListeners) await listener().catch((err: Error) => this.options.log.error({ err }, "fencing step failed"));
      while (!this.closed) {
        try {
          await this.join();
          break;
        } catch (err) {
          this.options.log.warn({ err: (err as Error).message }, "could not re-join the cluster; retrying");
          await new Promise((r) => setTimeout(r, 1_000));
        }
      }
    })().finally(() => (this.fencing = undefined));
    return this.fencing;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.redis.eval(RELEASE, 2, keys.node(this.options.nodeId), keys.nodes, this.epochValue, this.options.nodeId).catch(() => undefined);
  }
}
