import { readFile } from "node:fs/promises";
import { z } from "zod";
import { ConfigError } from "../config/gateway.js";
import { parseJsonFile } from "../config/json-file.js";
import { AccessRulesSchema } from "./access-rules.js";
import { LOCAL_PRINCIPAL, type TenantLimits } from "./principal.js";

const LimitsSchema = z
  .object({
    requestsPerSecond: z.number().positive(),
    burst: z.number().int().positive(),
    maxSandboxes: z.number().int().min(0),
    maxSessions: z.number().int().min(0),
    maxSuspended: z.number().int().min(0),
    maxStreams: z.number().int().min(0),
  })
  .strict();

/** Limits for tenants that do not set their own: generous for one agent, small enough to stop a runaway one. */
export const DEFAULT_LIMITS: TenantLimits = {
  requestsPerSecond: 50,
  burst: 100,
  maxSandboxes: 8,
  maxSessions: 64,
  maxSuspended: 256,
  maxStreams: 32,
};

const TenantSchema = z
  .object({
    /** Hosted servers this tenant may use; absent means all. */
    servers: z.array(z.string().min(1)).optional(),
    admin: z.boolean().default(false),
    limits: LimitsSchema.partial().default({}),
    /** Which tools, prompts and resources the tenant may see and call (docs/design/tool-governance.md). */
    access: AccessRulesSchema.optional(),
  })
  .strict();

const KeySchema = z
  .object({
    /** A name for the key in logs and the audit log, e.g. "acme-ci". */
    id: z.string().min(1).max(64),
    tenant: z.string().min(1),
    /** SHA-256 of the key, hex: the key itself is never stored. */
    sha256: z.string().regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex digits (the SHA-256 of the key)"),
  })
  .strict();

const TENANT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export const TenantsFileSchema = z
  .object({
    defaults: LimitsSchema.partial().default({}),
    tenants: z.record(z.string(), TenantSchema).default({}),
    keys: z.array(KeySchema).default([]),
  })
  .strict()
  .superRefine((file, ctx) => {
    for (const name of Object.keys(file.tenants)) {
      if (!TENANT_NAME.test(name)) ctx.addIssue({ code: "custom", path: ["tenants", name], message: "tenant names are letters, digits, '_', '.', '-' (at most 64)" });
      if (name === LOCAL_PRINCIPAL.tenant) ctx.addIssue({ code: "custom", path: ["tenants", name], message: `'${name}' is reserved for the unauthenticated local user` });
    }
    const ids = new Set<string>();
    file.keys.forEach((key, i) => {
      if (!file.tenants[key.tenant]) ctx.addIssue({ code: "custom", path: ["keys", i, "tenant"], message: `no tenant '${key.tenant}' in "tenants"` });
      if (ids.has(key.id)) ctx.addIssue({ code: "custom", path: ["keys", i, "id"], message: `key id '${key.id}' is used twice` });
      ids.add(key.id);
    });
  });

export type TenantsFile = z.infer<typeof TenantsFileSchema>;
export type KeyEntry = TenantsFile["keys"][number];

export function parseTenantsFile(path: string, text: string): TenantsFile {
  return parseJsonFile(TenantsFileSchema, path, text, "tenants file");
}

export async function loadTenantsFile(path: string): Promise<TenantsFile> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new ConfigError(`cannot read the tenants file ${path}: ${(err as Error).message}`);
  }
  return parseTenantsFile(path, text);
}

/** A tenant's effective limits: its own, over the file's defaults, over the built-in ones. */
export function limitsOf(file: TenantsFile | undefined, tenant: string): TenantLimits {
  return { ...DEFAULT_LIMITS, ...file?.defaults, ...file?.tenants[tenant]?.limits } as TenantLimits;
}
