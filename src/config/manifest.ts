import { z } from "zod";

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

export const ServerManifestSchema = z
  .object({
    name: z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, "lowercase letters, digits and '-', starting with a letter"),
    description: z.string().default(""),
    source: SourceSchema,
    /** Command run in the guest, with /srv (the server's layer) as working directory. */
    command: z.string().min(1),
    args: z.array(z.string()).default([]),
    env: z.record(z.string(), z.string()).default({}),
    /** Names of `env` entries whose values are secret: given to this server's guest only, never logged. */
    secretEnv: z.array(z.string()).default([]),
    guest: z
      .object({
        memoryMiB: z.number().int().min(128).max(16384).default(256),
        vcpus: z.number().int().min(1).max(16).default(1),
      })
      .strict()
      .default({ memoryMiB: 256, vcpus: 1 }),
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
      })
      .strict()
      .default({ callMs: 30_000, bootMs: 120_000, resumeMs: 10_000, idleSuspendMs: 60_000 }),
    warmup: z.array(WarmupRequestSchema).default([]),
    /**
     * `session`: one client session = one clone, kept across calls. `call`: every request gets a fresh
     * clone of the template, destroyed after its answer, so nothing one call writes reaches the next.
     */
    isolation: z.enum(["session", "call"]).default("session"),
    /** No guest has a network device; a manifest would have to ask for one, and none is supported yet. */
    network: z.literal(false).default(false),
  })
  .strict();

export type ServerManifest = z.infer<typeof ServerManifestSchema>;
export type ServerSource = z.infer<typeof SourceSchema>;
export type WarmupRequest = z.infer<typeof WarmupRequestSchema>;
