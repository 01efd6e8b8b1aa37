import { spawn, type ChildProcess } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { scratchDir } from "../scratch-dir.js";
import { ensureDebianPackage } from "./debian-package.js";
import { freePort } from "./free-port.js";

export interface TestHaproxy {
  port: number;
  stop(): Promise<void>;
}

/**
 * Debian's haproxy in front of `backends` (ports on loopback): round robin, no stickiness, each backend
 * checked on /readyz every 300 ms, so a node that dies or drains is out of the rotation within a second;
 * a request whose connection a dead node refused is sent to another.
 */
export async function startHaproxy(backends: number[]): Promise<TestHaproxy> {
  const binary = await ensureDebianPackage("haproxy", "/usr/sbin/haproxy");
  const port = await freePort();
  const dir = await scratchDir("mcpv-haproxy");
  const config = [
    "global",
    "  maxconn 4096",
    "defaults",
    "  mode http",
    "  timeout connect 2s",
    "  timeout client 5m",
    "  timeout server 5m",
    "  timeout check 2s",
    // A connection refused by a node that just died is tried on another: nothing reached the dead one.
    "  retries 2",
    "  option redispatch",
    "frontend mcp",
    `  bind 127.0.0.1:${port}`,
    "  default_backend gateways",
    "backend gateways",
    "  balance roundrobin",
    "  option httpchk GET /readyz",
    "  default-server check inter 300ms fall 2 rise 1",
    ...backends.map((p, i) => `  server node${i + 1} 127.0.0.1:${p}`),
    "",
  ].join("\n");
  const file = join(dir, "haproxy.cfg");
  await writeFile(file, config);
  const child: ChildProcess = spawn(binary, ["-db", "-f", file], { stdio: ["ignore", "ignore", "ignore"] });
  const deadline = Date.now() + 10_000;
  while (!(await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false))) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`haproxy did not start on port ${port} (config ${file})`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await exited;
    },
  };
}
