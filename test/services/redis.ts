import { spawn, type ChildProcess } from "node:child_process";
import { Redis } from "ioredis";
import { ensureDebianPackage } from "./debian-package.js";
import { freePort } from "./free-port.js";
import { connect } from "node:net";

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
  });
}

export interface TestRedis {
  url: string;
  /** A client for the test's own checks (closed by `stop`). */
  client: Redis;
  stop(): Promise<void>;
}

/** A private, throwaway Redis from Debian's redis-server: loopback only, nothing persisted, its own port. */
export async function startRedis(): Promise<TestRedis> {
  const binary = await ensureDebianPackage("redis-server", "/usr/bin/redis-server");
  const port = await freePort();
  const child: ChildProcess = spawn(binary, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "yes"], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  const url = `redis://127.0.0.1:${port}/0`;
  const deadline = Date.now() + 10_000;
  while (!(await accepts(port))) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`redis-server did not start on port ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const client = new Redis(url, { maxRetriesPerRequest: 1 });
  client.on("error", () => undefined); // a test that stops Redis on purpose sees failures where it asks
  await client.ping();
  return {
    url,
    client,
    async stop() {
      client.disconnect();
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await exited;
    },
  };
}
