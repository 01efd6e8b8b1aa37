import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { z } from "zod";

/** Gateway settings, from flags, then MCPVISOR_* environment variables, then these defaults. */
export const GatewayConfigSchema = z
  .object({
    host: z.string().min(1).default("127.0.0.1"),
    port: z.coerce.number().int().min(0).max(65535).default(8080),
    /** Images, templates and the accelerator verdict; never inside the repository. */
    cacheDir: z.string().min(1).default(join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "mcpvisor")),
    /** Per-VM sockets. Unix socket paths are limited to 108 bytes, so this stays short. */
    runDir: z.string().min(1).default(join(tmpdir(), `mcpv-${process.getuid?.() ?? 0}`)),
    serversDir: z.string().min(1),
    /** Names of the servers to host; empty means every manifest in serversDir. */
    servers: z.array(z.string()).default([]),
    accel: z.enum(["auto", "kvm", "tcg"]).default("auto"),
    /** A client session with no request for this long is closed and its sandbox destroyed. */
    sessionIdleMs: z.coerce.number().int().positive().default(30 * 60_000),
    /** VMs (prestarted, warm and in sessions) allowed at once; past it requests queue, then get BUSY. */
    maxVms: z.coerce.number().int().min(1).default(64),
    /** Requests that may wait for a free VM at once. */
    vmQueue: z.coerce.number().int().min(0).default(64),
    /** How long a request may wait for a free VM. */
    vmQueueTimeoutMs: z.coerce.number().int().positive().default(10_000),
    /** Suspended sessions nobody resumed are deleted after this long. */
    sessionRetentionMs: z.coerce.number().int().positive().default(7 * 24 * 3_600_000),
    /** Largest accepted HTTP request body. */
    maxBodyBytes: z.coerce.number().int().positive().default(4 * 1024 * 1024),
    /** Host names (besides loopback and the bound address) that requests may be addressed to. */
    allowedHosts: z.array(z.string()).default([]),
    logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  })
  .strict();

export type GatewayConfig = z.infer<typeof GatewayConfigSchema>;

const ENV: Record<string, keyof GatewayConfig> = {
  MCPVISOR_HOST: "host",
  MCPVISOR_PORT: "port",
  MCPVISOR_CACHE_DIR: "cacheDir",
  MCPVISOR_RUN_DIR: "runDir",
  MCPVISOR_SERVERS_DIR: "serversDir",
  MCPVISOR_ACCEL: "accel",
  MCPVISOR_SESSION_IDLE_MS: "sessionIdleMs",
  MCPVISOR_LOG_LEVEL: "logLevel",
  MCPVISOR_MAX_VMS: "maxVms",
  MCPVISOR_SESSION_RETENTION_MS: "sessionRetentionMs",
  MCPVISOR_VM_QUEUE: "vmQueue",
  MCPVISOR_VM_QUEUE_TIMEOUT_MS: "vmQueueTimeoutMs",
};

/** Merges flags over the environment and validates; a bad value names the setting and what it expects. */
export function resolveGatewayConfig(flags: Partial<Record<keyof GatewayConfig, unknown>>, env = process.env): GatewayConfig {
  const fromEnv: Record<string, unknown> = {};
  for (const [name, key] of Object.entries(ENV)) if (env[name] !== undefined && env[name] !== "") fromEnv[key] = env[name];
  if (env.MCPVISOR_SERVERS) fromEnv.servers = env.MCPVISOR_SERVERS.split(",").filter(Boolean);
  if (env.MCPVISOR_ALLOWED_HOSTS) fromEnv.allowedHosts = env.MCPVISOR_ALLOWED_HOSTS.split(",").filter(Boolean);
  const merged = Object.fromEntries(
    Object.entries({ ...fromEnv, ...flags }).filter(([, value]) => value !== undefined),
  );
  const parsed = GatewayConfigSchema.safeParse(merged);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "(config)"}: ${i.message}`).join("; ");
    throw new ConfigError(`invalid gateway configuration: ${issues}`);
  }
  return parsed.data;
}

export class ConfigError extends Error {
  readonly code = "CONFIG_INVALID";
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}
