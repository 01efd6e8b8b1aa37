import { hostname } from "node:os";
import type { Logger } from "pino";
import type { GatewayConfig } from "../config/gateway.js";
import { ClusterBuildLocks } from "./build-lock.js";
import { ClusterHolds } from "./cluster-holds.js";
import { ClusterRateLimiter } from "./cluster-rate-limiter.js";
import { NodeLease } from "./node-lease.js";
import { PeerForwarding } from "./peer-forwarding.js";
import { connectRedis, keys, type Redis } from "./redis.js";
import { SessionDirectory } from "./session-directory.js";

/**
 * This node's part in a cluster (docs/design/cluster.md): its lease, the session directory, tenants'
 * cluster-wide rate and open sessions, build locks for what the nodes share, and forwarding to peers.
 */
export class Cluster {
  readonly directory: SessionDirectory;
  readonly rate: ClusterRateLimiter;
  readonly openSessions: ClusterHolds;
  readonly openStreams: ClusterHolds;
  readonly runningSandboxes: ClusterHolds;
  readonly builds: ClusterBuildLocks;
  readonly peers: PeerForwarding;

  private constructor(
    private readonly redis: Redis,
    readonly lease: NodeLease,
    readonly leaseMs: number,
    /** The folder every node shares: images, templates, suspended sandboxes. */
    readonly storeDir: string,
    secret: string,
    log: Logger,
  ) {
    this.directory = new SessionDirectory(redis, lease);
    this.rate = new ClusterRateLimiter(redis);
    this.openSessions = new ClusterHolds(redis, lease, "sessions", "open sessions");
    this.openStreams = new ClusterHolds(redis, lease, "streams", "open streams (SSE and WebSocket)");
    this.runningSandboxes = new ClusterHolds(redis, lease, "sandboxes", "running sandboxes");
    this.builds = new ClusterBuildLocks(redis, lease.nodeId, log);
    this.peers = new PeerForwarding(lease.nodeId, secret, log);
  }

  /** Connects to the cluster's Redis and joins; fails at once, saying why, when Redis cannot be reached. */
  static async join(config: GatewayConfig, log: Logger): Promise<Cluster> {
    const port = config.port;
    const redis = connectRedis(config.clusterRedis!);
    redis.on("error", (err: Error) => log.debug({ err: err.message }, "cluster Redis connection error"));
    try {
      await redis.connect();
    } catch (err) {
      redis.disconnect();
      throw new Error(`cannot reach the cluster's Redis at ${config.clusterRedis}: ${(err as Error).message}`, { cause: err });
    }
    const nodeId = config.nodeId ?? `${hostname()}-${port}`;
    const host = config.host === "0.0.0.0" || config.host === "::" ? hostname() : config.host;
    const lease = new NodeLease(redis, {
      nodeId,
      url: config.nodeUrl ?? `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
      leaseMs: config.nodeLeaseMs,
      log,
      // This node's quota holds live as long as its lease: a dead node's holds go with it.
      companions: (["sessions", "streams", "sandboxes"] as const).map((kind) => keys.holds(kind, nodeId)),
    });
    await lease.join();
    return new Cluster(redis, lease, config.nodeLeaseMs, config.clusterStore!, config.clusterSecret!, log);
  }

  /** Leaves the cluster: the lease goes at once, so peers stop forwarding here. */
  async close(): Promise<void> {
    await this.lease.close();
    this.peers.close();
    this.redis.disconnect();
  }
}
