import { subscribe, unsubscribe, type Channel } from "node:diagnostics_channel";
import { readdirSync, readFileSync } from "node:fs";
import { cp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { resolveGatewayConfig, type GatewayConfig } from "../src/config/gateway.js";
import type { ServerManifest } from "../src/config/manifest.js";
import { REPO_ROOT, startGateway, type Gateway, type RuntimeOptions } from "../src/main.js";
import { createLogger } from "../src/telemetry/log.js";
import { scratchDir } from "./scratch-dir.js";
export { eventually } from "./eventually.js";

/** Tests share the default cache, which `npm test` fills first with `mcpvisor build`. */
export function testConfig(overrides: Partial<GatewayConfig> = {}): GatewayConfig {
  return resolveGatewayConfig({
    serversDir: join(REPO_ROOT, "servers"),
    port: 0,
    logLevel: process.env.MCPVISOR_TEST_LOG ?? "silent",
    ...overrides,
  });
}

/** A servers directory holding copies of repo manifests, each changed by `edit`. */
export async function serversDirWith(edits: Record<string, (m: ServerManifest) => Partial<ServerManifest>>): Promise<string> {
  const dir = await scratchDir("mcpv-servers");
  for (const [name, edit] of Object.entries(edits)) {
    const manifest = JSON.parse(await readFile(join(REPO_ROOT, "servers", `${name}.json`), "utf8")) as ServerManifest;
    await writeFile(join(dir, `${name}.json`), JSON.stringify({ ...manifest, ...edit(manifest) }, null, 2));
  }
  return dir;
}

/** A gateway whose templates exist and whose pools were filled once. */
export async function startReadyGateway(
  overrides: Partial<GatewayConfig> = {},
  options: RuntimeOptions = {},
): Promise<Gateway & { url: (server: string) => string }> {
  const config = testConfig(overrides);
  const gateway = await startGateway(config, createLogger(config.logLevel), () => undefined, options);
  await gateway.settled;
  const report = gateway.readiness.report();
  if (!report.ready) {
    await gateway.close();
    throw new Error(`gateway not ready: ${report.reasons.join("; ")}`);
  }
  return Object.assign(gateway, { url: (server: string) => `http://127.0.0.1:${gateway.port}/servers/${server}/mcp` });
}

export async function connect(url: string): Promise<Client> {
  const client = new Client({ name: "mcpvisor-test", version: "0.0.0" });
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  return client;
}

/** Runs a shell command with the `exec` server and returns its structured result. */
export async function sh(client: Client, command: string, timeoutMs?: number) {
  const result = (await client.callTool({ name: "run", arguments: { command, ...(timeoutMs ? { timeoutMs } : {}) } })) as CallToolResult;
  return result.structuredContent as { stdout: string; stderr: string; exitCode: number | null; timedOut: boolean };
}

export async function copyCache(from: string): Promise<string> {
  const dir = await scratchDir("mcpv-cache");
  await cp(from, dir, { recursive: true });
  return dir;
}


/**
 * The next record published on `channel` that `accepts`; fails with `what` after `timeoutMs`. Call it
 * before causing the event (a record published earlier is not seen), await it after.
 */
export function nextEvent<T>(channel: Channel, what: string, accepts: (record: T) => boolean = () => true, timeoutMs = 5_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      unsubscribe(channel.name, onMessage);
    };
    const onMessage = (message: unknown) => {
      if (!accepts(message as T)) return;
      done();
      resolve(message as T);
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    subscribe(channel.name, onMessage);
  });
}

/** Processes whose parent is `pid` (QEMU runs as a direct child of the gateway process). */
export function childPids(pid: number): number[] {
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .filter((entry) => {
      try {
        const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
        return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === pid;
      } catch {
        return false; // exited while we looked
      }
    })
    .map(Number);
}

/** Whether `pid` runs (a zombie does not: nothing may reap it in a container without an init). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

/** The QEMU processes this test process started (through setpriv, which execs QEMU in place) and that still run. */
export function runningVmms(): number[] {
  return childPids(process.pid).filter((pid) => {
    try {
      return alive(pid) && readFileSync(`/proc/${pid}/comm`, "utf8").startsWith("qemu-system");
    } catch {
      return false;
    }
  });
}
