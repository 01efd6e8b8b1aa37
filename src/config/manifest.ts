import { z } from "zod";
import { DestinationSyntaxError, parseDestination } from "../egress/destination.js";
import { SECRET_REFERENCE } from "../egress/credentials.js";

/** Where a hosted server's code comes from. */
const SourceSchema = z.discriminatedUnion("kind", [
  z
    .object({
      kind: z.literal("npm"),
      package: z.string().min(1),
      /** Exact version: a template must be reproducible, so ranges are not accepted. */
      version: z.string().regex(/^\d+\.\d+\.\d+([-+][\w.-]+)?$/, "an exact version such as 2026.8.31"),
    })
    .strict(),
  z
    .object({
      kind: z.literal("pypi"),
      package: z.string().regex(/^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/, "a PyPI project name such as mcp-server-time"),
      /** Exact release (PEP 440), as for npm: a template must be reproducible. */
      version: z.string().regex(/^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$/, "an exact version such as 2026.10.19"),
      extras: z.array(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, "an extra's name")).default([]),
    })
    .strict(),
  z
    .object({
      kind: z.literal("bundle"),
      /** A TypeScript/JavaScript entry in this repository, bundled with esbuild into /srv/server.mjs. */
      entry: z.string().min(1),
    })
    .strict(),
]);

/** A JSON-RPC request the sandbox makes to warm the server (before the template snapshot, and in each
 * pre-resumed clone). Only harmless, read-only calls belong here. */
const WarmupRequestSchema = z
  .object({ method: z.string().min(1), params: z.record(z.string(), z.unknown()).optional() })
  .strict();

/** A header the gateway adds to every HTTP request the server sends to `destination`. */
const CredentialSchema = z
  .object({
    /** Exactly one entry of `allow` (not `public`). */
    destination: z.string().min(1),
    header: z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, "an HTTP header name such as Authorization"),
    /** Text with `${NAME}` (the gateway's environment) or `${file:/path}` (a secret file) references. */
    value: z
      .string()
      .min(1)
      .refine((v) => SECRET_REFERENCE.test(v), "must reference a secret, e.g. \"Bearer ${GITHUB_TOKEN}\" or \"${file:/run/secrets/token}\": a literal secret in a manifest would be readable by anyone who reads the manifest"),
  })
  .strict();

const NetworkSchema = z
  .object({
    allow: z.array(z.string()).min(1, "list at least one destination, or set network to false"),
    credentials: z.array(CredentialSchema).default([]),
    limits: z
      .object({
        /** Connections open at once from one sandbox. */
        maxConnections: z.number().int().min(1).max(1024).default(32),
        /** Bytes in both directions per sandbox per minute; past it new connections are refused. */
        maxBytesPerMinute: z.number().int().min(1024).default(256 * 1024 * 1024),
      })
      .strict()
      .default({ maxConnections: 32, maxBytesPerMinute: 256 * 1024 * 1024 }),
  })
  .strict()
  .superRefine((network, ctx) => {
    const labels = new Map<string, string>();
    network.allow.forEach((entry, i) => {
      try {
        const destination = parseDestination(entry);
        labels.set(destination.label, destination.kind);
      } catch (err) {
        if (!(err instanceof DestinationSyntaxError)) throw err;
        ctx.addIssue({ code: "custom", path: ["allow", i], message: err.message });
      }
    });
    const credited = new Set<string>();
    network.credentials.forEach((credential, i) => {
      let label: string;
      try {
        label = parseDestination(credential.destination).label;
      } catch (err) {
        if (!(err instanceof DestinationSyntaxError)) throw err;
        ctx.addIssue({ code: "custom", path: ["credentials", i, "destination"], message: err.message });
        return;
      }
      if (credited.has(label)) {
        ctx.addIssue({ code: "custom", path: ["credentials", i, "destination"], message: `'${credential.destination}' already has a credential; one per destination` });
      }
      credited.add(label);
      const kind = labels.get(label);
      if (kind === undefined) {
        ctx.addIssue({ code: "custom", path: ["credentials", i, "destination"], message: `'${credential.destination}' is not in network.allow` });
      } else if (kind === "public") {
        ctx.addIssue({ code: "custom", path: ["credentials", i, "destination"], message: "a credential cannot go to `public` (every host on the internet would receive it)" });
      }
    });
  });

/**
 * `false`, or a grant. Not a z.union: when both of a union's branches fail on a type error, zod reports
 * only "network: Invalid input", so a wrong type deep in a grant would not name its field.
 */
const NetworkField = z
  .unknown()
  .default(false)
  .transform((value, ctx): false | z.output<typeof NetworkSchema> => {
    if (value === false) return false;
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      ctx.addIssue({ code: "custom", input: value, message: 'false (no network), or an object such as {"allow": ["api.github.com:443"]}' });
      return z.NEVER;
    }
    const parsed = NetworkSchema.safeParse(value);
    if (parsed.success) return parsed.data;
    for (const issue of parsed.error.issues) ctx.addIssue({ code: "custom", path: issue.path, message: issue.message, input: value });
    return z.NEVER;
  });

export const ServerManifestSchema = z
  .object({
    name: z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, "lowercase letters, digits and '-', starting with a letter"),
    description: z.string().default(""),
    /**
     * The shared sandbox this server runs in, with every other server naming it (docs/design/workspace.md):
     * one guest, one /workspace, one clone per session for all of them. Absent: a sandbox of its own.
     */
    sandbox: z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, "lowercase letters, digits and '-', starting with a letter").optional(),
    source: SourceSchema,
    /**
     * Command run in the guest, with /srv (the server's layer) as working directory: `node` for the guest's
     * node, a console script of a `pypi` package (e.g. mcp-server-time), or a path.
     */
    command: z.string().min(1),
    args: z.array(z.string()).default([]),
    env: z.record(z.string(), z.string()).default({}),
    /** Names of `env` entries whose values are secret: given to this server's guest only, never logged. */
    secretEnv: z.array(z.string()).default([]),
    guest: z
      .object({
        memoryMiB: z.number().int().min(128).max(16384).default(256),
        vcpus: z.number().int().min(1).max(16).default(1),
        /** CPython 3.11 with pip, git and tzdata in the guest (the image `pypi` servers always get). */
        python: z.boolean().default(false),
        /**
         * The most /workspace (a tmpfs, in the guest's RAM, saved with the sandbox) may hold; writes past
         * it fail with ENOSPC ("No space left on device"). It must leave 128 MiB of memoryMiB to processes.
         */
        workspaceMiB: z.number().int().min(1).max(16384).default(64),
        /**
         * Stop the guest's vCPUs while no request is in flight, so an idle clone costs no host CPU; they
         * run again when a request comes. `false` for a server that works between requests (timers,
         * notifications it sends on its own).
         */
        freezeWhenIdle: z.boolean().default(true),
      })
      .strict()
      .default({ memoryMiB: 256, vcpus: 1, python: false, workspaceMiB: 64, freezeWhenIdle: true }),
    pool: z
      .object({
        /** QEMU processes started ahead, waiting for a snapshot to load. */
        prestarted: z.number().int().min(0).max(64).default(2),
        /** Clones already resumed and warmed, waiting for a session. */
        warm: z.number().int().min(0).max(64).default(1),
      })
      .strict()
      .default({ prestarted: 2, warm: 1 }),
    timeouts: z
      .object({
        /** Wall-clock limit for one request to the server. */
        callMs: z.number().int().positive().default(30_000),
        /** Cold boot of the template, from QEMU start to `initialize` answered. */
        bootMs: z.number().int().positive().default(120_000),
        /** Resume of a clone, from state load to the agent's `resumed`. */
        resumeMs: z.number().int().positive().default(10_000),
        /** A session's sandbox idle this long is suspended to disk (no CPU, no RAM); 0 never. */
        idleSuspendMs: z.number().int().min(0).default(60_000),
        /**
         * A tools/call of a 2026-07-28 client that declared the tasks extension, still running after this
         * long, becomes a task the client polls (`tasks/get`); 0 never. The call keeps its `callMs` limit.
         */
        taskAfterMs: z.number().int().min(0).default(0),
      })
      .strict()
      .default({ callMs: 30_000, bootMs: 120_000, resumeMs: 10_000, idleSuspendMs: 60_000, taskAfterMs: 0 }),
    warmup: z.array(WarmupRequestSchema).default([]),
    /**
     * `session`: one client session = one clone, kept across calls. `call`: every request gets a fresh
     * clone of the template, destroyed after its answer, so nothing one call writes reaches the next.
     */
    isolation: z.enum(["session", "call"]).default("session"),
    /**
     * What the server may reach (docs/design/egress.md). `false` (the default): nothing; the guest has
     * no network device and no egress port at all.
     */
    network: NetworkField,
  })
  .strict();

export type ServerManifest = z.infer<typeof ServerManifestSchema>;
export type ServerSource = z.infer<typeof SourceSchema>;
/** Whether a server's guest has CPython (and git): its own code is Python, or its manifest asks. */
export function needsPython(manifest: ServerManifest): boolean {
  return manifest.source.kind === "pypi" || manifest.guest.python;
}

export type NetworkGrant = z.infer<typeof NetworkSchema>;
export type WarmupRequest = z.infer<typeof WarmupRequestSchema>;
