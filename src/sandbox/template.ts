import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { ErrorCode, LATEST_PROTOCOL_VERSION } from "@modelcontextprotocol/sdk/types.js";
import type { ServerManifest } from "../config/manifest.js";
import type { SandboxDriver, SnapshotFiles, VmSpec } from "./driver.js";
import { GuestRpcError, SandboxError, TemplateError } from "./errors.js";
import { sha256File, sha256Json } from "./file-hash.js";
import { events } from "../telemetry/events.js";
import { guestNotify, guestRequest } from "./guest-rpc.js";

const TEMPLATE_FORMAT = 5;

/**
 * Every request the gateway forwards carries W3C trace context in `_meta`; warming with that shape
 * matters: a server meeting it for the first time in a clone compiles code there (40 ms under TCG).
 */
const WARM_TRACEPARENT = "00-6d63707669736372207761726d757030-6d63707669736f72-01";

export interface TemplateMeta {
  format: typeof TEMPLATE_FORMAT;
  key: string;
  server: string;
  createdAt: string;
  stateSha256: string;
  ramBytes: number;
  ramSha256: string;
  /** The server's InitializeResult, answered to clients by the gateway: clones are already initialized. */
  initialize: Record<string, unknown>;
  /** What the server listed at template time; the gateway answers lists and validates calls from it. */
  catalog: Catalog;
  timings: { bootMs: number; initializeMs: number; warmupMs: number; snapshotMs: number };
}

export interface Template {
  dir: string;
  snapshot: SnapshotFiles;
  spec: VmSpec;
  meta: TemplateMeta;
}

/** What the template's server is told about its client: everything enabled, so no feature is hidden. */
export const TEMPLATE_CLIENT_CAPABILITIES = { roots: { listChanged: true }, sampling: {}, elicitation: {} };

/**
 * Templates on disk: `<cacheDir>/templates/<server>/<key>/{ram,state,meta.json}`. The key hashes every
 * input that shapes the guest's memory (image, kernel, VMM version, accelerator, manifest), so a change
 * to any of them selects a new template instead of trusting an old one.
 */
export class TemplateStore {
  constructor(
    private readonly driver: SandboxDriver,
    private readonly cacheDir: string,
    private readonly log: Logger,
  ) {}

  async keyFor(manifest: ServerManifest, spec: VmSpec): Promise<string> {
    const { command, args, env, warmup, guest } = manifest;
    return sha256Json({
      format: TEMPLATE_FORMAT,
      vmm: await this.driver.version(),
      spec,
      manifest: { command, args, env, warmup, guest },
    }).slice(0, 16);
  }

  private dirFor(server: string, key: string): string {
    return join(this.cacheDir, "templates", server, key);
  }

  /** Returns a verified template, building one when none exists or the stored one fails verification. */
  async ensure(manifest: ServerManifest, spec: VmSpec, onProgress: (line: string) => void): Promise<Template> {
    const key = await this.keyFor(manifest, spec);
    const existing = await this.load(manifest.name, key, spec);
    if (existing) return existing;
    return this.build(manifest, spec, key, onProgress);
  }

  /** Loads and verifies a stored template; a missing or damaged one is removed and `undefined` returned. */
  async load(server: string, key: string, spec: VmSpec): Promise<Template | undefined> {
    const dir = this.dirFor(server, key);
    let meta: TemplateMeta;
    try {
      meta = JSON.parse(await readFile(join(dir, "meta.json"), "utf8")) as TemplateMeta;
    } catch {
      return undefined;
    }
    const template: Template = { dir, spec, meta, snapshot: { ramPath: join(dir, "ram"), statePath: join(dir, "state") } };
    const problem = await this.verify(template);
    if (problem) {
      this.log.warn({ server, key, problem }, "stored template failed verification; rebuilding it");
      await rm(dir, { recursive: true, force: true });
      return undefined;
    }
    return template;
  }

  /** Checks the snapshot files against the checksums taken when it was made. */
  async verify(template: Template): Promise<string | undefined> {
    const { meta, snapshot } = template;
    if (meta.format !== TEMPLATE_FORMAT) return `format ${meta.format}, expected ${TEMPLATE_FORMAT}`;
    try {
      const ram = await stat(snapshot.ramPath);
      if (ram.size !== meta.ramBytes) return `RAM file is ${ram.size} bytes, expected ${meta.ramBytes}`;
      if ((await sha256File(snapshot.statePath)) !== meta.stateSha256) return "device state checksum mismatch";
      if ((await sha256File(snapshot.ramPath)) !== meta.ramSha256) return "RAM checksum mismatch";
    } catch (err) {
      return `snapshot file missing: ${(err as Error).message}`;
    }
    return undefined;
  }

  async discard(template: Template): Promise<void> {
    await rm(template.dir, { recursive: true, force: true });
  }

  private async build(manifest: ServerManifest, spec: VmSpec, key: string, onProgress: (line: string) => void): Promise<Template> {
    const finalDir = this.dirFor(manifest.name, key);
    const buildDir = `${finalDir}.build-${process.pid}-${Date.now()}`;
    await mkdir(buildDir, { recursive: true });
    const ramPath = join(buildDir, "ram");
    const statePath = join(buildDir, "state");
    const t0 = performance.now();
    onProgress(`template ${manifest.name}: cold boot (${spec.accel}, ${spec.memoryMiB} MiB)`);
    const vm = await this.driver.boot(spec, ramPath, manifest.timeouts.bootMs);
    const stopAnswering = answerServerRequests(vm.channel);
    try {
      const tBoot = performance.now();
      const initialize = await guestRequest(vm.channel, "initialize", {
        protocolVersion: LATEST_PROTOCOL_VERSION,
        capabilities: TEMPLATE_CLIENT_CAPABILITIES,
        clientInfo: { name: "mcpvisor", version: "0.1.0" },
      }, manifest.timeouts.bootMs);
      guestNotify(vm.channel, "notifications/initialized");
      const tInit = performance.now();
      onProgress(`template ${manifest.name}: server initialized in ${Math.round(tInit - t0)} ms; warming`);
      const catalog = await warmUp(vm.channel, manifest, initialize, manifest.timeouts.bootMs);
      const tWarm = performance.now();
      stopAnswering();
      await this.driver.snapshot(vm, statePath);
      const tSnap = performance.now();
      await syncFile(ramPath);
      const meta: TemplateMeta = {
        format: TEMPLATE_FORMAT,
        key,
        server: manifest.name,
        createdAt: new Date().toISOString(),
        stateSha256: await sha256File(statePath),
        ramBytes: (await stat(ramPath)).size,
        ramSha256: await sha256File(ramPath),
        initialize,
        catalog,
        timings: {
          bootMs: Math.round(tBoot - t0),
          initializeMs: Math.round(tInit - tBoot),
          warmupMs: Math.round(tWarm - tInit),
          snapshotMs: Math.round(tSnap - tWarm),
        },
      };
      await writeFile(join(buildDir, "meta.json"), JSON.stringify(meta, null, 2));
      await rm(finalDir, { recursive: true, force: true });
      await rename(buildDir, finalDir);
      await this.pruneOthers(manifest.name, key);
      events.templateBuilt.publish({ server: manifest.name, coldBootMs: meta.timings.bootMs + meta.timings.initializeMs, snapshotMs: meta.timings.snapshotMs });
      onProgress(
        `template ${manifest.name}: snapshot taken (boot ${meta.timings.bootMs} ms, initialize ${meta.timings.initializeMs} ms, ` +
          `warm-up ${meta.timings.warmupMs} ms, snapshot ${meta.timings.snapshotMs} ms)`,
      );
      return { dir: finalDir, spec, meta, snapshot: { ramPath: join(finalDir, "ram"), statePath: join(finalDir, "state") } };
    } catch (err) {
      await vm.kill("template build failed");
      await rm(buildDir, { recursive: true, force: true });
      if (err instanceof SandboxError) throw err;
      throw new TemplateError(`template for ${manifest.name} failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Templates of older keys are unreachable once a new one exists. */
  private async pruneOthers(server: string, keep: string): Promise<void> {
    const root = join(this.cacheDir, "templates", server);
    for (const entry of await readdir(root)) {
      if (entry !== keep && !entry.includes(".build-")) await rm(join(root, entry), { recursive: true, force: true });
    }
  }
}

export interface Catalog {
  tools: Record<string, unknown>[];
  prompts: Record<string, unknown>[];
  resources: Record<string, unknown>[];
  resourceTemplates: Record<string, unknown>[];
}

const LISTS = [
  { method: "tools/list", capability: "tools", key: "tools" },
  { method: "prompts/list", capability: "prompts", key: "prompts" },
  { method: "resources/list", capability: "resources", key: "resources" },
  { method: "resources/templates/list", capability: "resources", key: "resourceTemplates" },
] as const;
/** A server that pages forever must not hang the template build. */
const MAX_PAGES = 50;

/**
 * Exercises the server's code paths so that the compiled code and caches are in the snapshot: every
 * list the server supports (all pages), then the manifest's harmless calls. Used for the template and
 * for pooled clones; returns what the lists said.
 */
export async function warmUp(
  channel: Parameters<typeof guestRequest>[0],
  manifest: ServerManifest,
  initialize: Record<string, unknown>,
  timeoutMs: number,
): Promise<Catalog> {
  const capabilities = (initialize.capabilities ?? {}) as Record<string, unknown>;
  const catalog: Catalog = { tools: [], prompts: [], resources: [], resourceTemplates: [] };
  for (const { method, capability, key } of LISTS) {
    if (!capabilities[capability]) continue;
    let cursor: string | undefined;
    for (let page = 0; page < MAX_PAGES; page++) {
      let result: Record<string, unknown>;
      try {
        result = await guestRequest(channel, method, cursor ? { cursor } : undefined, timeoutMs);
      } catch (err) {
        // A server may offer resources without templates: an unknown method just means an empty list.
        if (err instanceof GuestRpcError && err.rpcCode === ErrorCode.MethodNotFound) break;
        throw err;
      }
      catalog[key].push(...((result[key] as Record<string, unknown>[] | undefined) ?? []));
      cursor = typeof result.nextCursor === "string" ? result.nextCursor : undefined;
      if (!cursor) break;
    }
  }
  for (const request of manifest.warmup) {
    const params = request.params ?? {};
    const meta = (params._meta ?? {}) as Record<string, unknown>;
    await guestRequest(channel, request.method, { ...params, _meta: { ...meta, traceparent: WARM_TRACEPARENT } }, timeoutMs);
  }
  // Some clients use string ids: give that shape a pass too.
  await guestRequest(channel, "ping", undefined, timeoutMs, "mcpvisor-warm");
  return catalog;
}

/**
 * While the template is built nobody is on the client side, but the server may ask (e.g. server-filesystem
 * asks for roots right after initialize). It gets an answer, so it does not wait in every clone.
 */
function answerServerRequests(channel: Parameters<typeof guestRequest>[0]): () => void {
  return channel.onMessage((message) => {
    if (typeof message.method !== "string" || message.id === undefined) return;
    channel.send(
      message.method === "roots/list"
        ? { jsonrpc: "2.0", id: message.id, result: { roots: [] } }
        : { jsonrpc: "2.0", id: message.id, error: { code: ErrorCode.MethodNotFound, message: "no client while the template is built" } },
    );
  });
}

async function syncFile(path: string): Promise<void> {
  const fh = await open(path, "r+");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
