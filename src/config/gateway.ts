import { availableParallelism, homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";

/** A whole number of at least `min`; from the environment or a flag, its decimal text. */
function whole(min: number) {
  return z.coerce
    .number({ error: (issue) => (issue.code === "invalid_type" ? "expected a number" : undefined) })
    .int({ error: "expected a whole number" })
    .min(min);
}

/** A list; from the environment or a flag, its items separated by commas or spaces. */
function list(item: z.ZodString = z.string().min(1)) {
  return z.preprocess((v) => (typeof v === "string" ? v.split(/[\s,]+/).filter(Boolean) : v), z.array(item));
}

/** On or off; from the environment or a flag's value, 1/true or 0/false. */
function onOff() {
  return z.preprocess(
    (v) => (v === "1" || v === "true" ? true : v === "0" || v === "false" ? false : v),
    z.boolean({ error: "expected 1, true, 0 or false" }),
  );
}

/**
 * Gateway settings, from flags, then environment variables, then these defaults. Each key is also
 * an environment variable (`envName`: sessionIdleMs is MCPVISOR_SESSION_IDLE_MS) and a flag of
 * `mcpvisor start` (`flagName`: --session-idle-ms), so a new key needs no other table.
 */
export const GatewayConfigSchema = z
  .object({
    host: z.string().min(1).default("127.0.0.1"),
    port: whole(0).max(65535).default(8080),
    /** Images, templates and the accelerator verdict; never inside the repository. */
    cacheDir: z.string().min(1).default(join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "mcpvisor")),
    /** Per-VM sockets. Unix socket paths are limited to 108 bytes, so this stays short. */
    runDir: z.string().min(1).default(join(tmpdir(), `mcpv-${process.getuid?.() ?? 0}`)),
    /** Server manifests; by default the ones shipped in this repository. */
    serversDir: z.string().min(1).default(fileURLToPath(new URL("../../servers", import.meta.url))),
    /** Names of the servers to host; empty means every manifest in serversDir. */
    servers: list().default([]),
    accel: z.enum(["auto", "kvm", "tcg"]).default("auto"),
    /** A client session with no request for this long is closed and its sandbox destroyed. */
    sessionIdleMs: whole(1).default(30 * 60_000),
    /** VMs (prestarted, warm and in sessions) allowed at once; past it requests queue, then get BUSY. */
    maxVms: whole(1).default(64),
    /**
     * Guests that run a request at once; more wait at the gateway, in order (docs/design/run-gate.md).
     * Default: the host's CPUs. 0: no limit.
     */
    guestRunSlots: whole(0).default(availableParallelism()),
    /** Requests that may wait for a free VM at once. */
    vmQueue: whole(0).default(64),
    /** How long a request may wait for a free VM. */
    vmQueueTimeoutMs: whole(1).default(10_000),
    /** Suspended sessions nobody resumed are deleted after this long. */
    sessionRetentionMs: whole(1).default(7 * 24 * 3_600_000),
    /** Largest accepted HTTP request body. */
    maxBodyBytes: whole(1).default(4 * 1024 * 1024),
    /** Host names (besides loopback and the bound address) that requests may be addressed to. */
    allowedHosts: list().default([]),
    logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
    /** Log lines as JSON, or readable ones; `auto`: readable when stderr is a terminal. */
    logFormat: z.enum(["auto", "json", "pretty"]).default("auto"),
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
    oauthScopes: list().default([]),
    /** The scope that makes a caller an admin. */
    oauthAdminScope: z.string().min(1).default("mcpvisor:admin"),
    /** Listen on a non-loopback address with no authentication (refused unless set). */
    insecureNoAuth: onOff().default(false),
    /** Who called which tool, when, with what outcome: one JSON line per event; "off" for none. */
    auditLog: z.string().min(1).optional(),
    /** Largest accepted request head (request line and headers); larger gets 431. */
    maxHeaderBytes: whole(1024).default(16 * 1024),
    /** Deepest JSON nesting accepted in a message. */
    maxJsonDepth: whole(4).default(64),
    /** A client that has not sent its whole request head by then is cut off (slowloris). */
    headersTimeoutMs: whole(1).default(10_000),
    /** A client that has not sent its whole request (head and body) by then is cut off. */
    requestTimeoutMs: whole(1).default(30_000),
    /** DNS servers (`ip` or `ip:port`) the egress resolves sandboxes' destinations with; empty: the system's. */
    egressResolver: list().default([]),
    /** A PEM file of CAs the egress trusts upstream besides the system store (a private CA). */
    egressUpstreamCa: z.string().min(1).optional(),
    /** Egress connections open at once across every sandbox (each is a file descriptor or two). */
    egressMaxConnections: whole(1).default(1024),
    /**
     * Cluster mode (docs/design/cluster.md): the Redis holding node leases, the session directory and
     * tenants' cluster-wide limits, as redis://host:port/db. Unset: one node, everything in this process.
     */
    clusterRedis: z.url({ protocol: /^rediss?$/ }).optional(),
    /** Cluster mode: the folder every node shares (a ReadWriteMany volume) for images, templates and suspended state. */
    clusterStore: z.string().min(1).optional(),
    /** Cluster mode: the key that signs requests forwarded between nodes. */
    clusterSecret: z.string().min(16, { error: "expected at least 16 characters" }).optional(),
    /** Cluster mode: this node's name (unique in the cluster); default: the host name and port. */
    nodeId: z.string().regex(/^[A-Za-z0-9._-]{1,100}$/, { error: "expected 1 to 100 letters, digits, '.', '_' or '-'" }).optional(),
    /** Cluster mode: the URL other nodes forward requests to; default http://host:port. */
    nodeUrl: z.url({ protocol: /^https?$/ }).transform((u) => u.replace(/\/+$/, "")).optional(),
    /** Cluster mode: a node that could not renew its lease for this long is fenced (its sessions end). */
    nodeLeaseMs: whole(1000).default(10_000),
    /**
     * Under KVM, the guest CPU model: `host` passes the host's own through; a cluster of different
     * machines names a model every node offers (e.g. `Skylake-Server-v4`), so saved state loads anywhere.
     */
    kvmCpu: z.string().regex(/^[A-Za-z0-9_.,+=-]{1,100}$/, { error: "expected a QEMU CPU model name, e.g. host or Skylake-Server-v4" }).default("host"),
    /** On SIGTERM: how long idle sandboxes may take to be saved before the process exits. */
    drainTimeoutMs: whole(0).default(20_000),
  })
  .strict()
  .superRefine((config, ctx) => {
    if (config.clusterRedis !== undefined) {
      for (const key of ["clusterStore", "clusterSecret"] as const) {
        if (config[key] === undefined) ctx.addIssue({ code: "custom", path: [key], message: `cluster mode (clusterRedis) needs ${key} too` });
      }
      if (config.port === 0 && config.nodeUrl === undefined) {
        ctx.addIssue({ code: "custom", path: ["nodeUrl"], message: "cluster mode on port 0 needs nodeUrl: other nodes must know where to forward requests" });
      }
    }
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

export type ConfigKey = keyof GatewayConfig;

export const CONFIG_KEYS = Object.keys(GatewayConfigSchema.shape) as ConfigKey[];

/** The environment variable of a setting: MCPVISOR_ and its name in upper snake case. */
export function envName(key: ConfigKey): string {
  return `MCPVISOR_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

/** The command-line flag of a setting, without its leading `--`: its name in kebab case. */
export function flagName(key: ConfigKey): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** Whether a setting is on/off (an `onOff()`), so that its flag takes no value. */
export function isSwitch(key: ConfigKey): boolean {
  let schema: z.ZodType = GatewayConfigSchema.shape[key];
  while (schema instanceof z.ZodDefault || schema instanceof z.ZodOptional) schema = schema.unwrap() as z.ZodType;
  return schema instanceof z.ZodPipe && schema.out instanceof z.ZodBoolean;
}

/**
 * Merges flags over the environment and validates. A bad value is reported with where it came from
 * (the variable or the flag), the value, and what is expected. An empty variable counts as unset.
 */
export function resolveGatewayConfig(flags: Partial<Record<ConfigKey, unknown>>, env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  const given = new Map<ConfigKey, { from: string; value: unknown }>();
  for (const key of CONFIG_KEYS) {
    const value = env[envName(key)];
    if (value !== undefined && value !== "") given.set(key, { from: envName(key), value });
  }
  for (const [key, value] of Object.entries(flags) as [ConfigKey, unknown][]) {
    if (value !== undefined) given.set(key, { from: `--${flagName(key)}`, value });
  }
  const parsed = GatewayConfigSchema.safeParse(Object.fromEntries([...given].map(([key, { value }]) => [key, value])));
  if (!parsed.success) {
    const issues = parsed.error.issues.map((issue) => {
      const source = given.get(issue.path[0] as ConfigKey);
      const where = source ? `${source.from}=${JSON.stringify(source.value)}` : issue.path.join(".") || "(config)";
      return `${where}: ${issue.message}`;
    });
    throw new ConfigError(`invalid gateway configuration: ${issues.join("; ")}`);
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
