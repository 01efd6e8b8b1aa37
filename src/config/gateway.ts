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
    /** The URL clients reach the gateway at (behind a proxy, its public one); default http://host:port. */
    publicUrl: z.url({ protocol: /^https?$/ }).transform((u) => u.replace(/\/+$/, "")).optional(),
    /** Tenants, their servers and limits, and hashed API keys (see README, "Remote access"). */
    tenantsFile: z.string().min(1).optional(),
    /** OAuth 2.1: the authorization server whose access tokens are accepted. */
    oauthIssuer: z.url().optional(),
    /** Its JWKS; found from the issuer's metadata when not set. */
    oauthJwksUrl: z.url().optional(),
    /** The token claim naming the tenant. */
    oauthTenantClaim: z.string().min(1).default("tenant"),
    /** Scopes every MCP request's token needs. */
    oauthScopes: z.array(z.string().min(1)).default([]),
    /** The scope that makes a caller an admin. */
    oauthAdminScope: z.string().min(1).default("mcpvisor:admin"),
    /** Listen on a non-loopback address with no authentication (refused unless set). */
    insecureNoAuth: z.boolean().default(false),
    /** Who called which tool, when, with what outcome: one JSON line per event; "off" for none. */
    auditLog: z.string().min(1).optional(),
    /** Largest accepted request head (request line and headers); larger gets 431. */
    maxHeaderBytes: z.coerce.number().int().min(1024).default(16 * 1024),
    /** Deepest JSON nesting accepted in a message. */
    maxJsonDepth: z.coerce.number().int().min(4).default(64),
    /** A client that has not sent its whole request head by then is cut off (slowloris). */
    headersTimeoutMs: z.coerce.number().int().positive().default(10_000),
    /** A client that has not sent its whole request (head and body) by then is cut off. */
    requestTimeoutMs: z.coerce.number().int().positive().default(30_000),
  })
  .strict()
  .superRefine((config, ctx) => {
    const authenticated = config.tenantsFile !== undefined || config.oauthIssuer !== undefined;
    if (!isLoopback(config.host) && !authenticated && !config.insecureNoAuth) {
      ctx.addIssue({
        code: "custom",
        path: ["host"],
        message: `refusing to listen on ${config.host} without authentication: anyone who can reach it could run code in your sandboxes. Configure API keys (--tenants-file) or OAuth (--oauth-issuer), or bind to 127.0.0.1; --insecure-no-auth overrides this`,
      });
    }
  });

/** Whether `host` only accepts connections from this machine. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127(\.\d{1,3}){3}$/.test(host);
}

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
  MCPVISOR_PUBLIC_URL: "publicUrl",
  MCPVISOR_TENANTS_FILE: "tenantsFile",
  MCPVISOR_OAUTH_ISSUER: "oauthIssuer",
  MCPVISOR_OAUTH_JWKS_URL: "oauthJwksUrl",
  MCPVISOR_OAUTH_TENANT_CLAIM: "oauthTenantClaim",
  MCPVISOR_OAUTH_ADMIN_SCOPE: "oauthAdminScope",
  MCPVISOR_AUDIT_LOG: "auditLog",
  MCPVISOR_MAX_HEADER_BYTES: "maxHeaderBytes",
  MCPVISOR_MAX_JSON_DEPTH: "maxJsonDepth",
};

/** Merges flags over the environment and validates; a bad value names the setting and what it expects. */
export function resolveGatewayConfig(flags: Partial<Record<keyof GatewayConfig, unknown>>, env = process.env): GatewayConfig {
  const fromEnv: Record<string, unknown> = {};
  for (const [name, key] of Object.entries(ENV)) if (env[name] !== undefined && env[name] !== "") fromEnv[key] = env[name];
  if (env.MCPVISOR_SERVERS) fromEnv.servers = env.MCPVISOR_SERVERS.split(",").filter(Boolean);
  if (env.MCPVISOR_OAUTH_SCOPES) fromEnv.oauthScopes = env.MCPVISOR_OAUTH_SCOPES.split(/[ ,]+/).filter(Boolean);
  if (env.MCPVISOR_INSECURE_NO_AUTH) fromEnv.insecureNoAuth = env.MCPVISOR_INSECURE_NO_AUTH === "1" || env.MCPVISOR_INSECURE_NO_AUTH === "true";
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
