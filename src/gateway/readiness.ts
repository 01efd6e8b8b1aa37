import type { ServerPoolStats } from "../sandbox/pool.js";

/** What /readyz reports: the start-up phase (images being built) and then each server's pool. */
export class Readiness {
  private phase: string | undefined = "starting";
  private failure: string | undefined;
  private draining = false;
  private clusterLease: (() => boolean) | undefined;
  private pools: () => ServerPoolStats[] = () => [];

  setPhase(phase: string): void {
    this.phase = phase;
  }

  setFailed(reason: string): void {
    this.failure = reason;
  }

  /** The process is stopping: load balancers must send it nothing new while it saves its sessions. */
  drain(): void {
    this.draining = true;
  }

  /** In a cluster: a node without its lease (Redis out of reach, fenced and not yet back) takes no traffic. */
  watchClusterLease(held: () => boolean): void {
    this.clusterLease = held;
  }

  watchPools(stats: () => ServerPoolStats[]): void {
    this.phase = undefined;
    this.pools = stats;
  }

  report(): { ready: boolean; reasons: string[]; servers: ServerPoolStats[] } {
    const servers = this.pools();
    const reasons: string[] = [];
    if (this.draining) reasons.push("draining: saving sessions before shutting down");
    if (this.clusterLease && !this.clusterLease()) reasons.push("not holding a cluster lease: Redis is out of reach, or the node was fenced and is joining again");
    if (this.failure) reasons.push(this.failure);
    if (this.phase) reasons.push(this.phase);
    for (const s of servers) if (s.status !== "ready") reasons.push(`${s.server}: ${s.reason ?? s.status}`);
    return { ready: reasons.length === 0, reasons, servers };
  }
}
