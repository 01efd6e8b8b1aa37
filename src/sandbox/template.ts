import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { join } from "node:path";
import type { Logger } from "pino";
import { z } from "zod";
import type { ServerManifest } from "../config/manifest.js";
import type { SandboxUnit } from "../config/sandbox-unit.js";
import { serverChannel, type ServerChannel, type SandboxDriver, type SnapshotFiles, type Vm, type VmSpec } from "./driver.js";
import { SandboxError, SnapshotCorruptError, TemplateError } from "./errors.js";
import { EGRESS_CLOSE_WAIT_MS, exitDetail } from "./sandbox.js";
import { sha256File, sha256Json } from "./file-hash.js";
import { events } from "../telemetry/events.js";
import { LOCAL_BUILDS, type BuildLocks } from "../cluster/build-lock.js";

const TEMPLATE_FORMAT = 7;

/**
 * What a hosted server must have done before its snapshot, and in a clone before it waits in the pool.
 * The sandbox layer only carries bytes to the guest: the router supplies this (it speaks MCP).
 */
export interface GuestPreparation {
  /** Runs in the template's guest right after its cold boot; what it returns (JSON) is kept with the template. */
  template(channel: ServerChannel, manifest: ServerManifest, timeoutMs: number): Promise<unknown>;
  /** Runs in a clone resumed ahead of demand, with what `template` returned. */
  clone(channel: ServerChannel, manifest: ServerManifest, prepared: unknown, timeoutMs: number): Promise<void>;
}

/** `meta.json` beside a template's snapshot files; a file that does not fit is a damaged template. */
const TemplateMetaSchema = z.object({
  format: z.literal(TEMPLATE_FORMAT),
  key: z.string(),
  server: z.string(),
  createdAt: z.string(),
  stateSha256: z.string(),
  ramBytes: z.number(),
  ramSha256: z.string(),
  /** What the preparation returned for each server (for MCP servers: the InitializeResult and the catalog). */
  prepared: z.record(z.string(), z.unknown()),
  /** `warmupMs`: the preparation (initialize, lists, warm-up calls). */
  timings: z.object({ bootMs: z.number(), warmupMs: z.number(), snapshotMs: z.number() }),
});
export type TemplateMeta = z.infer<typeof TemplateMetaSchema>;

export interface Template {
  dir: string;
  snapshot: SnapshotFiles;
  spec: VmSpec;
  meta: TemplateMeta;
}

/**
 * What a saved sandbox names its template by: the key (the inputs) and a digest of the bytes. A RAM diff
 * loads only over the very bytes it was taken against; a template rebuilt under the same key (another
 * node's build, a store wiped and refilled) has other bytes, so another id, and the diff is refused
 * rather than loaded over the wrong memory.
 */
export function templateIdOf(meta: TemplateMeta): string {
  return `${meta.key}-${createHash("sha256").update(meta.ramSha256).update(meta.stateSha256).digest("hex").slice(0, 16)}`;
}

/** What the preparation returned for `server` when the template was made. */
export function preparedFor(template: { meta: TemplateMeta }, server: string): unknown {
  return template.meta.prepared[server];
}

/**
 * Templates on disk: `<cacheDir>/templates/<unit>/<key>/{ram,state,meta.json}`, one per sandbox unit (a
 * server, or the servers sharing a sandbox). The key hashes every input that shapes the guest's memory
 * (image, kernel, VMM version, accelerator, manifests), so a change to any of them selects a new
 * template instead of trusting an old one.
 */
export class TemplateStore {
  constructor(
    private readonly driver: SandboxDriver,
    private readonly cacheDir: string,
    private readonly log: Logger,
    private readonly preparation: GuestPreparation,
    /** In a cluster, templates live in the shared store and are built by one node at a time. */
    private readonly builds: BuildLocks = LOCAL_BUILDS,
  ) {}

  async keyFor(unit: SandboxUnit, spec: VmSpec): Promise<string> {
    return sha256Json({
      format: TEMPLATE_FORMAT,
      vmm: await this.driver.version(),
      spec,
      // Whether a guest is frozen when idle does not shape its memory: not part of the key.
      servers: unit.members.map(({ name, command, args, env, warmup, guest: { freezeWhenIdle: _, ...guest } }) => ({ name, command, args, env, warmup, guest })),
    }).slice(0, 16);
  }

  private dirFor(server: string, key: string): string {
    return join(this.cacheDir, "templates", server, key);
  }

  /** Returns a verified template, building one when none exists or the stored one fails verification. */
  async ensure(unit: SandboxUnit, spec: VmSpec, onProgress: (line: string) => void): Promise<Template> {
    const key = await this.keyFor(unit, spec);
    const existing = await this.load(unit.name, key, spec);
    if (existing) return existing;
    // Checked again under the lock: another node may have built it while this one waited.
    return this.builds.exclusive(`template:${unit.name}:${key}`, async () => (await this.load(unit.name, key, spec)) ?? this.build(unit, spec, key, onProgress));
  }

  /** Loads and verifies a stored template; a missing or damaged one is removed and `undefined` returned. */
  async load(server: string, key: string, spec: VmSpec): Promise<Template | undefined> {
    const dir = this.dirFor(server, key);
    let text: string;
    try {
      text = await readFile(join(dir, "meta.json"), "utf8");
    } catch {
      return undefined; // never built (or the build did not finish): build it
    }
    const parsed = TemplateMetaSchema.safeParse(parseJson(text));
    if (!parsed.success) {
      this.log.warn({ server, key, problem: parsed.error.message }, "stored template's meta.json does not fit this version; rebuilding it");
      return undefined; // the build replaces the directory
    }
    const meta = parsed.data;
    const template: Template = { dir, spec, meta, snapshot: { ramPath: join(dir, "ram"), statePath: join(dir, "state") } };
    try {
      await this.verify(template);
    } catch (err) {
      this.log.warn({ server, key, problem: (err as Error).message }, "stored template failed verification; rebuilding it");
      await rm(dir, { recursive: true, force: true });
      return undefined;
    }
    return template;
  }

  /** Checks the snapshot files against the checksums taken when it was made; throws SnapshotCorruptError. */
  async verify(template: Template): Promise<void> {
    const { meta, snapshot } = template;
    const corrupt = (why: string) => new SnapshotCorruptError(`template ${meta.server}/${meta.key}: ${why}`);
    let ramBytes: number;
    try {
      ramBytes = (await stat(snapshot.ramPath)).size;
    } catch (err) {
      throw corrupt(`snapshot file missing: ${(err as Error).message}`);
    }
    if (ramBytes !== meta.ramBytes) throw corrupt(`RAM file is ${ramBytes} bytes, expected ${meta.ramBytes}`);
    const state = await sha256File(snapshot.statePath).catch((err: Error) => {
      throw corrupt(`snapshot file missing: ${err.message}`);
    });
    if (state !== meta.stateSha256) throw corrupt("device state checksum mismatch");
    if ((await sha256File(snapshot.ramPath)) !== meta.ramSha256) throw corrupt("RAM checksum mismatch");
  }

  async discard(template: Template): Promise<void> {
    await rm(template.dir, { recursive: true, force: true });
  }

  /**
   * A connection the warm-up opened (a database pool's first client) would be in every clone, and every
   * clone must reset it at resume: some servers die of that (server-postgres has no pool error handler).
   * So the snapshot waits, up to EGRESS_CLOSE_WAIT_MS, for the server to close them itself, as pools do when
   * idle; what is still open then is reset in each clone.
   */
  private async drainEgress(vm: Vm, server: string, onProgress: (line: string) => void): Promise<void> {
    const open = () => vm.egress?.openConnections() ?? 0;
    if (open() === 0) return;
    onProgress(`template ${server}: waiting for the ${open()} connection(s) the warm-up opened to close before the snapshot`);
    const deadline = Date.now() + EGRESS_CLOSE_WAIT_MS;
    while (open() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    if (open() > 0) this.log.warn({ server, open: open() }, "template snapshot taken with egress connections open: each clone resets them when it resumes");
  }

  private async build(unit: SandboxUnit, spec: VmSpec, key: string, onProgress: (line: string) => void): Promise<Template> {
    const finalDir = this.dirFor(unit.name, key);
    const buildDir = `${finalDir}.build-${process.pid}-${Date.now()}`;
    await mkdir(buildDir, { recursive: true });
    const ramPath = join(buildDir, "ram");
    const statePath = join(buildDir, "state");
    const t0 = performance.now();
    onProgress(`template ${unit.name}: cold boot (${spec.accel}, ${spec.memoryMiB} MiB)`);
    const vm = await this.driver.boot(spec, ramPath, unit.timeouts.bootMs);
    try {
      const tBoot = performance.now();
      onProgress(`template ${unit.name}: booted in ${Math.round(tBoot - t0)} ms; initializing and warming ${unit.members.length > 1 ? `its ${unit.members.length} servers` : "the server"}`);
      // A server that dies while it is initialized and warmed fails the build at once, saying why, not
      // at the end of bootMs.
      const died = vm.exited.then((exit): never => {
        throw new TemplateError(`${unit.members.length > 1 ? `sandbox '${unit.name}'` : `server '${unit.name}'`} died during initialize and warm-up: ${exitDetail(exit)}`);
      });
      died.catch(() => undefined);
      const prepared: Record<string, unknown> = {};
      for (const member of unit.members) {
        prepared[member.name] = await Promise.race([this.preparation.template(serverChannel(vm.channel, member.name), member, unit.timeouts.bootMs), died]);
      }
      await this.drainEgress(vm, unit.name, onProgress);
      const tWarm = performance.now();
      await this.driver.snapshot(vm, statePath);
      const tSnap = performance.now();
      await syncFile(ramPath);
      const meta: TemplateMeta = {
        format: TEMPLATE_FORMAT,
        key,
        server: unit.name,
        createdAt: new Date().toISOString(),
        stateSha256: await sha256File(statePath),
        ramBytes: (await stat(ramPath)).size,
        ramSha256: await sha256File(ramPath),
        prepared,
        timings: {
          bootMs: Math.round(tBoot - t0),
          warmupMs: Math.round(tWarm - tBoot),
          snapshotMs: Math.round(tSnap - tWarm),
        },
      };
      await writeFile(join(buildDir, "meta.json"), JSON.stringify(meta, null, 2));
      await rm(finalDir, { recursive: true, force: true });
      await rename(buildDir, finalDir);
      await this.pruneOthers(unit, key);
      events.templateBuilt.publish({ server: unit.name, coldBootMs: meta.timings.bootMs + meta.timings.warmupMs, snapshotMs: meta.timings.snapshotMs });
      onProgress(
        `template ${unit.name}: snapshot taken (boot ${meta.timings.bootMs} ms, initialize and warm-up ${meta.timings.warmupMs} ms, ` +
          `snapshot ${meta.timings.snapshotMs} ms)`,
      );
      return { dir: finalDir, spec, meta, snapshot: { ramPath: join(finalDir, "ram"), statePath: join(finalDir, "state") } };
    } catch (err) {
      await vm.kill("template build failed");
      await rm(buildDir, { recursive: true, force: true });
      if (err instanceof SandboxError) throw err;
      throw new TemplateError(`template for ${unit.name} failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Templates of older keys are unreachable once a new one exists. A shared sandbox started with only
   * some of its servers (`--servers exec`) has templates of its own; those of other server sets stay.
   */
  private async pruneOthers(unit: SandboxUnit, keep: string): Promise<void> {
    const root = join(this.cacheDir, "templates", unit.name);
    const servers = unit.members.map((m) => m.name).sort().join(",");
    for (const entry of await readdir(root)) {
      if (entry === keep || entry.includes(".build-")) continue;
      const meta = TemplateMetaSchema.safeParse(parseJson(await readFile(join(root, entry, "meta.json"), "utf8").catch(() => "")));
      const other = meta.success ? Object.keys(meta.data.prepared).sort().join(",") : servers;
      if (other === servers) await rm(join(root, entry), { recursive: true, force: true });
    }
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

async function syncFile(path: string): Promise<void> {
  const fh = await open(path, "r+");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
