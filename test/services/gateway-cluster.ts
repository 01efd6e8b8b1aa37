import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, readFile, symlink } from "node:fs/promises";
import { join } from "node:path";
import { REPO_ROOT } from "../../src/main.js";
import { testConfig } from "../helpers.js";
import { scratchDir } from "../scratch-dir.js";
import { freePort } from "./free-port.js";
import type { TestRedis } from "./redis.js";

/** One gateway process of a test cluster; its stdout and stderr go to `log`. */
export class GatewayNode {
  child: ChildProcess | undefined;
  readonly log: string;

  constructor(
    readonly id: string,
    readonly port: number,
    private readonly env: Record<string, string>,
    dir: string,
    /** A key of an admin tenant, to read `/api/status`. */
    private readonly adminKey: string,
  ) {
    this.log = join(dir, `${id}.log`);
  }

  url(path = "/servers/memory/mcp"): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  /** Starts the gateway process and waits until it is ready. */
  async start(): Promise<void> {
    const out = createWriteStream(this.log, { flags: "a" });
    await new Promise((r) => out.once("open", r));
    const child = spawn(process.execPath, [join(REPO_ROOT, "bin", "mcpvisor"), "start", "--port", String(this.port), "--node-id", this.id], {
      env: { ...process.env, ...this.env, MCPVISOR_LOG_FORMAT: "json", MCPVISOR_LOG_LEVEL: "info" },
      stdio: ["ignore", out, out],
    });
    this.child = child;
    const deadline = Date.now() + 300_000;
    while (!(await fetch(this.url("/readyz")).then((r) => r.ok, () => false))) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`node ${this.id} did not become ready; see ${this.log}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Sends `signal` and waits for the process to exit. */
  async stop(signal: NodeJS.Signals): Promise<number | null> {
    const child = this.child!;
    if (!this.running) return child.exitCode;
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    child.kill(signal);
    return exited;
  }

  async logText(): Promise<string> {
    return readFile(this.log, "utf8").catch(() => "");
  }

  /** A series' value in this node's /metrics (0 when absent). */
  async metric(series: string): Promise<number> {
    const text = await (await fetch(this.url("/metrics"), { headers: { authorization: `Bearer ${this.adminKey}` } })).text();
    const line = text.split("\n").find((l) => l.startsWith(`${series} `));
    return line ? Number(line.slice(series.length + 1)) : 0;
  }

  /** Sandboxes that hold a session here and run (suspended ones are in the store), from the admin's status. */
  async sessionSandboxes(): Promise<number> {
    const status = (await (await fetch(this.url("/api/status"), { headers: { authorization: `Bearer ${this.adminKey}` } })).json()) as { servers: { leased?: { state: string }[] }[] };
    return status.servers.flatMap((s) => s.leased ?? []).filter((s) => s.state !== "suspended").length;
  }
}

export interface ClusterOptions {
  redis: TestRedis;
  serversDir: string;
  tenantsFile: string;
  adminKey: string;
  nodes: number;
  leaseMs: number;
}

/**
 * Gateway processes in cluster mode, with caches of their own and one shared store. The store starts
 * with no template; the guest images `npm test` built are linked in (as a ReadWriteMany volume would
 * share them), not rebuilt. Not started: `start()` each.
 */
export async function clusterNodes(options: ClusterOptions): Promise<GatewayNode[]> {
  const dir = await scratchDir("mcpv-cluster");
  const store = join(dir, "store");
  await mkdir(store, { recursive: true });
  await symlink(join(testConfig().cacheDir, "images"), join(store, "images"));
  const secret = randomBytes(24).toString("hex");
  const nodes: GatewayNode[] = [];
  for (let i = 1; i <= options.nodes; i++) {
    const id = `n${i}`;
    const port = await freePort();
    const env = {
      MCPVISOR_SERVERS_DIR: options.serversDir,
      MCPVISOR_SERVERS: "memory",
      MCPVISOR_CLUSTER_REDIS: options.redis.url,
      MCPVISOR_CLUSTER_STORE: store,
      MCPVISOR_CLUSTER_SECRET: secret,
      MCPVISOR_NODE_LEASE_MS: String(options.leaseMs),
      MCPVISOR_DRAIN_TIMEOUT_MS: "15000",
      MCPVISOR_TENANTS_FILE: options.tenantsFile,
      MCPVISOR_CACHE_DIR: join(dir, `cache-${id}`),
      MCPVISOR_RUN_DIR: `/tmp/mcpv-c${port}`,
      MCPVISOR_AUDIT_LOG: "off",
    };
    nodes.push(new GatewayNode(id, port, env, dir, options.adminKey));
  }
  return nodes;
}
