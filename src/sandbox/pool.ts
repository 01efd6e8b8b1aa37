import type { Logger } from "pino";
import type { ServerManifest } from "../config/manifest.js";
import type { PendingVm, SandboxDriver, Vm, VmSpec } from "./driver.js";
import { PoolClosedError, UnknownServerError } from "./errors.js";
import { events } from "../telemetry/events.js";
import { access, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Sandbox, type SandboxHost, type SandboxTimings } from "./sandbox.js";
import { VmBudget, type VmBudgetLimits } from "./vm-budget.js";
import { warmUp, type Template, type TemplateMeta, type TemplateStore } from "./template.js";

export interface ServerPoolStats {
  server: string;
  status: "building" | "ready" | "failed";
  reason?: string;
  prestarted: number;
  warm: number;
  leased: number;
  /** Leased sandboxes saved to disk, holding no VM. */
  suspended: number;
  /** The clones leased to sessions right now (`pid` is absent while suspended). */
  sandboxes: { id: string; pid: number | undefined; state: string; source: string }[];
}

const REFILL_DELAY_MS = 250;

interface WarmClone {
  vm: Vm;
  resumeMs: number;
}

/**
 * Keeps one server's clones coming: VMM processes started ahead and waiting for state (`prestarted`),
 * and clones already resumed and warmed (`warm`), refilled in the background after every take.
 */
class ServerPool {
  status: ServerPoolStats["status"] = "building";
  reason: string | undefined = "building the guest image";
  private spec!: VmSpec;
  private template: Template | undefined;
  private templateReady: Promise<Template>;
  private readonly prestarted: PendingVm[] = [];
  private readonly warm: WarmClone[] = [];
  private readonly leased = new Set<Sandbox>();
  private refilling = false;
  private refillTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly manifest: ServerManifest,
    private readonly specReady: Promise<VmSpec>,
    private readonly driver: SandboxDriver,
    private readonly templates: TemplateStore,
    private readonly log: Logger,
    private readonly progress: (line: string) => void,
    private readonly budget: VmBudget,
    private readonly suspendDir: string,
  ) {
    this.templateReady = this.loadTemplate();
    this.templateReady.catch(() => undefined);
  }

  private async loadTemplate(): Promise<Template> {
    try {
      this.spec = await this.specReady;
      this.reason = "building the template";
      const template = await this.templates.ensure(this.manifest, this.spec, this.progress);
      this.template = template;
      this.refill();
      return template;
    } catch (err) {
      this.status = "failed";
      this.reason = `template build failed: ${(err as Error).message}`;
      this.log.error({ server: this.manifest.name, err }, "template build failed");
      throw err;
    }
  }

  get templateMeta(): TemplateMeta | undefined {
    return this.template?.meta;
  }

  whenTemplateReady(): Promise<Template> {
    return this.templateReady;
  }

  stats(): ServerPoolStats {
    const stats: ServerPoolStats = {
      server: this.manifest.name,
      status: this.status,
      prestarted: this.prestarted.length,
      warm: this.warm.length,
      leased: this.leased.size,
      suspended: [...this.leased].filter((s) => s.state === "suspended").length,
      sandboxes: [...this.leased].map((s) => ({ id: s.id, pid: s.vm?.pid, state: s.state, source: s.timings.source })),
    };
    if (this.reason) stats.reason = this.reason;
    return stats;
  }

  async acquire(): Promise<Sandbox> {
    if (this.closed) throw new PoolClosedError("the gateway is shutting down");
    const template = await this.templateReady;
    const warm = this.warm.shift();
    if (warm) {
      this.refillAfterTake();
      return this.lease(warm.vm, { source: "warm-pool", resumeMs: warm.resumeMs });
    }
    const { vm, timings } = (await this.resumeClone(template, true))!;
    if (this.closed) {
      // The pool closed while this clone resumed: its close never saw it.
      void vm.kill("gateway shutting down");
      throw new PoolClosedError("the gateway is shutting down");
    }
    this.refillAfterTake();
    return this.lease(vm, timings);
  }

  /**
   * Starts a VMM, holding one slot of the global VM budget until its process exits. With `wait` false it
   * gives up (undefined) rather than queue: pool refills must never crowd out sessions.
   */
  private async prestartWithSlot(template: Template, wait: boolean): Promise<PendingVm | undefined> {
    if (wait) await this.budget.take();
    else if (!this.budget.tryTake()) return undefined;
    let pending: PendingVm;
    try {
      pending = await this.driver.prestart(this.spec, template.snapshot);
    } catch (err) {
      this.budget.release();
      throw err;
    }
    void pending.exited.then(() => this.budget.release());
    return pending;
  }

  /**
   * A sandbox saved before a gateway restart, known by its id: usable only on the template it was cloned
   * from, and only if its saved state is still there.
   */
  async adoptSuspended(sandboxId: string, templateKey: string): Promise<Sandbox | undefined> {
    const template = await this.templateReady;
    if (template.meta.key !== templateKey) return undefined;
    const { callMs, idleSuspendMs } = this.manifest.timeouts;
    const sandbox = new Sandbox(this.manifest.name, sandboxId, { source: "prestarted", resumeMs: 0 }, { callTimeoutMs: callMs, idleSuspendMs }, this.host);
    try {
      await access(this.suspendedStatePath(sandbox));
    } catch {
      return undefined;
    }
    this.leased.add(sandbox);
    sandbox.on("closed", () => this.leased.delete(sandbox));
    return sandbox;
  }

  /** Session sandboxes that run but have nothing in flight: candidates for an early suspend. */
  idleSandboxes(): Sandbox[] {
    return this.manifest.timeouts.idleSuspendMs ? [...this.leased].filter((s) => s.state === "idle") : [];
  }

  /** Ends one idle pooled VM (a prestarted one first) to make room for a session; false if none. */
  dropIdle(): boolean {
    const pending = this.prestarted.shift();
    if (pending) {
      void pending.kill("making room for a session");
      return true;
    }
    const warm = this.warm.shift();
    if (warm) {
      void warm.vm.kill("making room for a session");
      return true;
    }
    return false;
  }

  private lease(vm: Vm, timings: SandboxTimings): Sandbox {
    const { callMs, idleSuspendMs } = this.manifest.timeouts;
    const sandbox = new Sandbox(this.manifest.name, vm, timings, { callTimeoutMs: callMs, idleSuspendMs }, this.host);
    this.leased.add(sandbox);
    sandbox.on("closed", () => this.leased.delete(sandbox));
    return sandbox;
  }

  private suspendedStatePath(sandbox: Sandbox): string {
    return join(this.suspendDir, this.manifest.name, `${sandbox.id}.mig.gz`);
  }

  /** Saving a session's sandbox to disk and bringing it back, on a VMM from this pool. */
  private readonly host: SandboxHost = {
    suspend: async (sandbox, vm) => {
      const t0 = performance.now();
      const path = this.suspendedStatePath(sandbox);
      await mkdir(dirname(path), { recursive: true });
      const { bytes } = await this.driver.suspend(vm, path);
      const durationMs = performance.now() - t0;
      events.sandboxSuspend.publish({ server: this.manifest.name, sandboxId: sandbox.id, durationMs, bytes });
      this.log.info({ server: this.manifest.name, sandbox: sandbox.id, bytes, durationMs: Math.round(durationMs) }, "sandbox suspended to disk");
    },
    resume: async (sandbox) => {
      const template = await this.templateReady;
      const t0 = performance.now();
      const pending = this.prestarted.shift() ?? (await this.prestartWithSlot(template, true))!;
      const vm = await this.driver.resume(pending, this.manifest.timeouts.resumeMs, this.suspendedStatePath(sandbox));
      // Loaded: from now on the file holds an older state than the sandbox's. Left there, a gateway that
      // died before the next suspend would bring that older state back as if it were current.
      await rm(this.suspendedStatePath(sandbox), { force: true });
      const durationMs = performance.now() - t0;
      events.sandboxResume.publish({ server: this.manifest.name, sandboxId: sandbox.id, from: "suspended", source: "prestarted", durationMs });
      this.refillAfterTake();
      return vm;
    },
    discard: (sandbox) => {
      void rm(this.suspendedStatePath(sandbox), { force: true });
    },
  };

  /**
   * Resumes a clone from the template. A failed resume is retried once on a fresh VMM; if that fails
   * too, the template is verified and, when damaged, rebuilt before a last try: a corrupt snapshot is
   * never trusted, and never left in place.
   */
  private async resumeClone(template: Template, wait: boolean): Promise<{ vm: Vm; timings: SandboxTimings } | undefined> {
    for (let attempt = 1; ; attempt++) {
      const t0 = performance.now();
      let pending = this.prestarted.shift();
      const source: SandboxTimings["source"] = pending ? "prestarted" : "cold-vmm";
      pending ??= await this.prestartWithSlot(template, wait);
      if (!pending) return undefined;
      try {
        const vm = await this.driver.resume(pending, this.manifest.timeouts.resumeMs);
        const resumeMs = performance.now() - t0;
        events.sandboxResume.publish({ server: this.manifest.name, sandboxId: vm.id, from: "snapshot", source, durationMs: resumeMs });
        return { vm, timings: { source, resumeMs } };
      } catch (err) {
        this.log.warn({ server: this.manifest.name, attempt, err: (err as Error).message }, "clone resume failed");
        if (attempt === 1) continue;
        if (attempt === 2) {
          template = await this.recheckTemplate(template);
          continue;
        }
        throw err;
      }
    }
  }

  private async recheckTemplate(template: Template): Promise<Template> {
    const problem = await this.templates.verify(template);
    this.log.warn({ server: this.manifest.name, problem: problem ?? "none found" }, "rebuilding template after failed resumes");
    for (const pending of this.prestarted.splice(0)) void pending.kill("template replaced");
    for (const clone of this.warm.splice(0)) void clone.vm.kill("template replaced");
    await this.templates.discard(template);
    this.status = "building";
    this.reason = `rebuilding the template (${problem ?? "clones failed to resume"})`;
    this.templateReady = this.loadTemplate();
    const rebuilt = await this.templateReady;
    this.status = "ready";
    this.reason = undefined;
    return rebuilt;
  }

  /**
   * Refilling right away would compete for the CPU with the session that just took a clone, which is
   * about to make its first call (measured: +25 ms on a 2-core host under TCG). So wait a moment.
   */
  private refillAfterTake(): void {
    clearTimeout(this.refillTimer);
    this.refillTimer = setTimeout(() => this.refill(), REFILL_DELAY_MS);
    this.refillTimer.unref();
  }

  /** Tops up prestarted VMMs and warm clones in the background; one refill loop per server at a time. */
  refill(): void {
    if (this.refilling || this.closed || !this.template) return;
    this.refilling = true;
    void this.refillLoop()
      .catch((err) => this.log.warn({ server: this.manifest.name, err: (err as Error).message }, "pool refill failed"))
      .finally(() => {
        this.refilling = false;
      });
  }

  private async refillLoop(): Promise<void> {
    const { prestarted: wantPrestarted, warm: wantWarm } = this.manifest.pool;
    let failures = 0;
    while (!this.closed && this.template && failures < 3) {
      const template = this.template;
      try {
        if (this.warm.length < wantWarm) {
          const clone = await this.resumeClone(template, false);
          if (!clone) break; // the VM budget is spent: sessions come first
          const { vm, timings } = clone;
          try {
            await warmUp(vm.channel, this.manifest, template.meta.initialize, this.manifest.timeouts.callMs);
          } catch (err) {
            // Nothing else knows this clone yet: left running, it would hold a VM slot and its memory forever.
            void vm.kill(`warm-up failed: ${(err as Error).message}`);
            throw err;
          }
          this.keep(this.warm, { vm, resumeMs: timings.resumeMs }, vm);
        } else if (this.prestarted.length < wantPrestarted) {
          const pending = await this.prestartWithSlot(template, false);
          if (!pending) break;
          this.keep(this.prestarted, pending, pending);
        } else {
          break;
        }
      } catch (err) {
        failures++;
        this.log.warn({ server: this.manifest.name, err: (err as Error).message }, "could not add a clone to the pool");
      }
    }
    if (this.status === "building" && this.template) {
      this.status = "ready";
      this.reason = undefined;
    }
  }

  /** Adds to a pool list, and drops the entry if its VM dies while waiting there. */
  private keep<T>(list: T[], entry: T, vm: { exited: Promise<unknown>; kill(reason: string): Promise<void> }): void {
    if (this.closed) {
      void vm.kill("pool closed");
      return;
    }
    list.push(entry);
    void vm.exited.then(() => {
      const index = list.indexOf(entry);
      if (index >= 0) {
        list.splice(index, 1);
        this.refill();
      }
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.refillTimer);
    const kills = [
      ...this.prestarted.splice(0).map((p) => p.kill("gateway shutting down")),
      ...this.warm.splice(0).map((w) => w.vm.kill("gateway shutting down")),
      ...[...this.leased].map((s) => s.destroy("gateway shutting down")),
    ];
    await Promise.allSettled(kills);
  }
}

/** Every hosted server's pool; the router's only way to a sandbox. */
export class SandboxPool {
  private readonly servers = new Map<string, ServerPool>();
  private readonly budget: VmBudget;
  private closed = false;

  constructor(
    private readonly driver: SandboxDriver,
    private readonly templates: TemplateStore,
    private readonly log: Logger,
    /** Where suspended sandboxes are saved. */
    private readonly suspendDir: string,
    limits: VmBudgetLimits = { maxVms: 64, maxQueue: 64, queueTimeoutMs: 10_000 },
  ) {
    this.budget = new VmBudget(limits, () => this.reclaimOne());
  }

  /**
   * Frees one VM for a session that needs one: an idle pooled VM if there is any, else the least
   * recently used idle session sandbox is suspended early (its state goes to disk, nothing is lost).
   */
  private reclaimOne(): boolean {
    if ([...this.servers.values()].some((s) => s.dropIdle())) return true;
    const idle = [...this.servers.values()].flatMap((s) => s.idleSandboxes()).sort((a, b) => a.lastUsed - b.lastUsed)[0];
    if (!idle) return false;
    void idle.suspend();
    return true;
  }

  /** VMs running now against the global cap, and acquisitions waiting for one. */
  budgetStats(): { inUse: number; queued: number } {
    return { inUse: this.budget.inUse, queued: this.budget.queued };
  }

  /**
   * Starts building (or loading) the server's template and filling its pool, in the background, as soon
   * as its guest spec (image paths, accelerator) is known.
   */
  add(manifest: ServerManifest, spec: Promise<VmSpec>, progress: (line: string) => void = () => undefined): void {
    if (this.closed) throw new PoolClosedError("the pool is closed");
    this.servers.set(
      manifest.name,
      new ServerPool(manifest, spec, this.driver, this.templates, this.log, progress, this.budget, this.suspendDir),
    );
  }

  has(server: string): boolean {
    return this.servers.has(server);
  }

  serverNames(): string[] {
    return [...this.servers.keys()];
  }

  manifest(server: string): ServerManifest | undefined {
    return this.servers.get(server)?.manifest;
  }

  /** Resolves once the server's template exists (built, or loaded and verified). */
  async template(server: string): Promise<TemplateMeta> {
    return (await this.get(server).whenTemplateReady()).meta;
  }

  acquire(server: string): Promise<Sandbox> {
    return this.get(server).acquire();
  }

  adoptSuspended(server: string, sandboxId: string, templateKey: string): Promise<Sandbox | undefined> {
    return this.get(server).adoptSuspended(sandboxId, templateKey);
  }

  /** Deletes what a suspended sandbox saved, for a session that will never come back. */
  async discardSuspended(server: string, sandboxId: string): Promise<void> {
    if (/^[\w-]+$/.test(sandboxId)) await rm(join(this.suspendDir, server, `${sandboxId}.mig.gz`), { force: true });
  }

  stats(): ServerPoolStats[] {
    return [...this.servers.values()].map((s) => s.stats());
  }

  private get(server: string): ServerPool {
    const pool = this.servers.get(server);
    if (!pool) throw new UnknownServerError(server);
    return pool;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.budget.close();
    await Promise.allSettled([...this.servers.values()].map((s) => s.close()));
  }
}
