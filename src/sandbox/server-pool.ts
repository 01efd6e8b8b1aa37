import type { Logger } from "pino";
import type { SandboxUnit } from "../config/sandbox-unit.js";
import { serverChannel, type PendingVm, type SandboxDriver, type Vm, type VmSpec } from "./driver.js";
import { PoolClosedError } from "./errors.js";
import { events } from "../telemetry/events.js";
import type { SandboxAdmission } from "./admission.js";
import { TemplateStatus } from "./lifecycle.js";
import { Sandbox, type SandboxHost, type SandboxOptions, type SandboxTimings } from "./sandbox.js";
import type { SuspendStore } from "./suspend-store.js";
import type { SlotGate } from "./slot-gate.js";
import { preparedFor, templateIdOf, type GuestPreparation, type Template, type TemplateStore } from "./template.js";

export interface ServerPoolStats {
  /** The unit's name: a server's, or a shared sandbox's. */
  server: string;
  /** The servers in its guest. */
  members: string[];
  status: "building" | "ready" | "failed";
  reason?: string;
  prestarted: number;
  warm: number;
  leased: number;
  /** Leased sandboxes saved to disk, holding no VM. */
  suspended: number;
  /** The clones leased right now (`pid` is absent while suspended; `frozen`: its vCPUs are stopped). */
  sandboxes: { id: string; pid: number | undefined; state: string; source: string; frozen: boolean }[];
  /** Warm clones waiting with their vCPUs stopped. */
  warmFrozen: number;
  /** Warm clones the pool keeps now: the manifest's `pool.warm`, more while sessions arrive faster than it refills. */
  warmTarget: number;
}

const REFILL_DELAY_MS = 250;
/** While sessions find the warm pool empty, it grows by one clone per miss, up to this many times the manifest's `pool.warm`. */
const WARM_GROWTH_LIMIT = 4;

/** What a server pool needs from the gateway around it. */
export interface ServerPoolContext {
  driver: SandboxDriver;
  templates: TemplateStore;
  preparation: GuestPreparation;
  admission: SandboxAdmission;
  saved: SuspendStore;
  runGate: SlotGate;
  suspendGate: SlotGate;
  /** A warm pool grown by demand shrinks by one clone after this long without a session finding it empty. */
  warmShrinkAfterMs: number;
  log: Logger;
}

/**
 * Keeps one sandbox unit's clones coming (a server's, or a shared sandbox's): sandboxes whose VMM is started and waits for state (`prestarted`,
 * state pooled), and clones already resumed and warmed (`warm`, state idle), refilled in the background
 * after every take. It also saves its leased sandboxes to disk and brings them back.
 */
export class ServerPool {
  private readonly status = new TemplateStatus("building the guest image");
  private spec!: VmSpec;
  private template: Template | undefined;
  private templateReady: Promise<Template>;
  private readonly prestarted: Sandbox[] = [];
  private readonly warm: Sandbox[] = [];
  private readonly leased = new Set<Sandbox>();
  /** The refill loop under way, if any: close waits for it, so no VM it starts outlives the pool. */
  private refilling: Promise<void> | undefined;
  private refillTimer: NodeJS.Timeout | undefined;
  /** Warm clones to keep: starts at the manifest's, grows on misses, shrinks back when they stop. */
  private warmTarget: number;
  private lastWarmMiss = 0;
  private shrinkTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly sandboxOptions: SandboxOptions;

  constructor(
    readonly unit: SandboxUnit,
    private readonly specReady: Promise<VmSpec>,
    private readonly context: ServerPoolContext,
    private readonly progress: (line: string) => void,
  ) {
    const callMs = new Map(unit.members.map((m) => [m.name, m.timeouts.callMs]));
    this.sandboxOptions = { callTimeoutMs: (server) => callMs.get(server) ?? 30_000, idleSuspendMs: unit.timeouts.idleSuspendMs, freezeWhenIdle: unit.guest.freezeWhenIdle, runGate: context.runGate, suspendGate: context.suspendGate };
    this.warmTarget = unit.pool.warm;
    this.templateReady = this.loadTemplate();
    this.templateReady.catch(() => undefined);
  }

  private get log(): Logger {
    return this.context.log;
  }

  private async loadTemplate(): Promise<Template> {
    try {
      this.spec = await this.specReady;
      this.status.set("building", "building the template");
      const template = await this.context.templates.ensure(this.unit, this.spec, this.progress);
      this.template = template;
      this.refill();
      return template;
    } catch (err) {
      this.status.set("failed", `template build failed: ${(err as Error).message}`);
      this.log.error({ server: this.unit.name, err }, "template build failed");
      throw err;
    }
  }

  whenTemplateReady(): Promise<Template> {
    return this.templateReady;
  }

  stats(): ServerPoolStats {
    const stats: ServerPoolStats = {
      server: this.unit.name,
      members: this.unit.members.map((m) => m.name),
      status: this.status.state,
      prestarted: this.prestarted.length,
      warm: this.warm.length,
      leased: this.leased.size,
      suspended: [...this.leased].filter((s) => s.state === "suspended").length,
      sandboxes: [...this.leased].map((s) => ({ id: s.id, pid: s.pid, state: s.state, source: s.timings.source, frozen: s.frozen })),
      warmFrozen: this.warm.filter((s) => s.frozen).length,
      warmTarget: this.warmTarget,
    };
    if (this.status.reason) stats.reason = this.status.reason;
    return stats;
  }

  /** A running clone of the template for a new holder: a warm one, else one resumed now. */
  async acquire(): Promise<Sandbox> {
    if (this.closed) throw new PoolClosedError("The gateway is shutting down");
    const template = await this.templateReady;
    const warm = this.warm.shift();
    if (warm) {
      this.refillAfterTake();
      return this.lease(warm, { source: "warm-pool", resumeMs: warm.timings.resumeMs });
    }
    this.warmMissed();
    const sandbox = (await this.resumeClone(template, true))!;
    if (this.closed) {
      // The pool closed while this clone resumed: its close never saw it.
      await sandbox.destroy("gateway shutting down");
      throw new PoolClosedError("The gateway is shutting down");
    }
    this.refillAfterTake();
    return this.lease(sandbox, sandbox.timings);
  }

  /**
   * A sandbox saved before (a gateway restart), known by its id: usable only on the template it was
   * cloned from, and only if its saved state is still there. It resumes on first use.
   */
  async adopt(sandboxId: string, templateKey: string): Promise<Sandbox | undefined> {
    const template = await this.templateReady;
    if (templateIdOf(template.meta) !== templateKey || !(await this.context.saved.exists(this.unit.name, sandboxId))) return undefined;
    const sandbox = Sandbox.suspended(this.unit.name, sandboxId, templateKey, this.sandboxOptions, this.host);
    return this.lease(sandbox, { source: "prestarted", resumeMs: 0 });
  }

  private lease(sandbox: Sandbox, timings: SandboxTimings): Sandbox {
    sandbox.hold(timings);
    this.leased.add(sandbox);
    sandbox.on("closed", () => this.leased.delete(sandbox));
    return sandbox;
  }

  /**
   * A session found no warm clone: sessions arrive faster than the pool refills, so it keeps one more
   * (frozen warm clones cost memory, not CPU), up to WARM_GROWTH_LIMIT times the manifest's size. The
   * VM budget still bounds it: refills take only free slots, and sessions reclaim idle pooled VMs.
   */
  private warmMissed(): void {
    this.lastWarmMiss = Date.now();
    this.warmTarget = Math.min(this.warmTarget + 1, this.unit.pool.warm * WARM_GROWTH_LIMIT);
    this.armWarmShrink();
  }

  /** Back toward the manifest's size, one clone per `warmShrinkAfterMs` without a miss. */
  private armWarmShrink(): void {
    if (this.shrinkTimer || this.closed || this.warmTarget <= this.unit.pool.warm) return;
    const delay = this.context.warmShrinkAfterMs;
    this.shrinkTimer = setTimeout(() => {
      this.shrinkTimer = undefined;
      if (Date.now() - this.lastWarmMiss >= delay) {
        this.warmTarget--;
        if (this.warm.length > this.warmTarget) void this.warm.pop()!.destroy("the warm pool shrinks: sessions stopped finding it empty");
      }
      this.armWarmShrink();
    }, delay).unref();
  }

  /** Ends one idle pooled VM (a prestarted one first) to make room for a session; false if none. */
  dropIdle(): boolean {
    const idle = this.prestarted.shift() ?? this.warm.shift();
    if (!idle) return false;
    void idle.destroy("making room for a session");
    return true;
  }

  /** A new sandbox on a VMM started now, holding one slot of the global VM budget until its process exits. */
  private async prestart(template: Template, wait: boolean): Promise<Sandbox | undefined> {
    const slot = await this.context.admission.takeVmSlot(wait);
    if (!slot.held) return undefined;
    let pending: PendingVm;
    try {
      pending = await this.context.driver.prestart(this.spec, template.snapshot);
    } catch (err) {
      slot.giveBack();
      throw err;
    }
    slot.hold(pending.exited);
    return Sandbox.pooled(this.unit.name, pending, templateIdOf(template.meta), this.sandboxOptions, this.host);
  }

  /** Saving a leased sandbox to disk and bringing it back, on a VMM from this pool. */
  private readonly host: SandboxHost = {
    suspend: async (sandbox, vm) => {
      const t0 = performance.now();
      const path = await this.context.saved.prepare(this.unit.name, sandbox.id);
      try {
        const { bytes } = await this.context.driver.suspend(vm, path);
        const durationMs = performance.now() - t0;
        events.sandboxSuspend.publish({ server: this.unit.name, sandboxId: sandbox.id, durationMs, bytes });
        this.log.info({ server: this.unit.name, sandbox: sandbox.id, bytes, durationMs: Math.round(durationMs) }, "sandbox suspended to disk");
      } catch (err) {
        this.log.warn({ server: this.unit.name, sandbox: sandbox.id, err: (err as Error).message }, "suspend failed; the sandbox keeps running");
        throw err;
      }
    },
    resume: async (sandbox, pending) => {
      const timeoutMs = this.unit.timeouts.resumeMs;
      if (pending) return this.context.driver.resume(pending, timeoutMs);
      // From disk: on a VMM taken from the pool (the pooled sandbox hands its VMM over and ends).
      const template = await this.templateReady;
      const t0 = performance.now();
      const vmm = this.prestarted.shift() ?? (await this.prestart(template, true))!;
      const path = this.context.saved.pathFor(this.unit.name, sandbox.id);
      const vm = await this.context.driver.resume(vmm.handOver(), timeoutMs, path);
      // Loaded: from now on the file holds an older state than the sandbox's. Left there, a gateway that
      // died before the next suspend would bring that older state back as if it were current.
      await this.context.saved.discard(this.unit.name, sandbox.id);
      events.sandboxResume.publish({ server: this.unit.name, sandboxId: sandbox.id, from: "suspended", source: "prestarted", durationMs: performance.now() - t0 });
      this.refillAfterTake();
      return vm;
    },
    discard: (sandbox) => {
      void this.context.saved.discard(this.unit.name, sandbox.id);
    },
  };

  /**
   * Resumes a clone from the template. A failed resume is retried once on a fresh VMM; if that fails
   * too, the template is verified and, when damaged, rebuilt before a last try: a corrupt snapshot is
   * never trusted, and never left in place. Undefined when `wait` is false and the VM budget is spent.
   */
  private async resumeClone(template: Template, wait: boolean): Promise<Sandbox | undefined> {
    for (let attempt = 1; ; attempt++) {
      const t0 = performance.now();
      let sandbox = this.prestarted.shift();
      const source: SandboxTimings["source"] = sandbox ? "prestarted" : "cold-vmm";
      sandbox ??= await this.prestart(template, wait);
      if (!sandbox) return undefined;
      try {
        await sandbox.resume();
        const resumeMs = performance.now() - t0;
        sandbox.timings = { source, resumeMs };
        events.sandboxResume.publish({ server: this.unit.name, sandboxId: sandbox.id, from: "snapshot", source, durationMs: resumeMs });
        return sandbox;
      } catch (err) {
        this.log.warn({ server: this.unit.name, attempt, err: (err as Error).message }, "clone resume failed");
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
    const problem = await this.context.templates.verify(template).then(
      () => undefined,
      (err: Error) => err.message,
    );
    this.log.warn({ server: this.unit.name, problem: problem ?? "none found" }, "rebuilding template after failed resumes");
    for (const sandbox of [...this.prestarted.splice(0), ...this.warm.splice(0)]) void sandbox.destroy("template replaced");
    await this.context.templates.discard(template);
    this.status.set("building", `rebuilding the template (${problem ?? "clones failed to resume"})`);
    this.templateReady = this.loadTemplate();
    const rebuilt = await this.templateReady;
    this.status.set("ready");
    return rebuilt;
  }

  /**
   * Refilling right away would compete for the CPU with the session that just took a clone, which is
   * about to make its first call (measured: +25 ms on a 2-core host under TCG). So wait a moment, from
   * the first take on: pushed back by every take, a burst of sessions would starve the refill.
   */
  private refillAfterTake(): void {
    if (this.refillTimer) return;
    this.refillTimer = setTimeout(() => {
      this.refillTimer = undefined;
      this.refill();
    }, REFILL_DELAY_MS);
    this.refillTimer.unref();
  }

  /** Tops up prestarted VMMs and warm clones in the background; one refill loop per server at a time. */
  refill(): void {
    if (this.refilling || this.closed || !this.template) return;
    this.refilling = this.refillLoop()
      .catch((err) => this.log.warn({ server: this.unit.name, err: (err as Error).message }, "pool refill failed"))
      .finally(() => {
        this.refilling = undefined;
      });
  }

  private async refillLoop(): Promise<void> {
    const wantPrestarted = this.unit.pool.prestarted;
    let failures = 0;
    while (!this.closed && this.template && failures < 3) {
      const template = this.template;
      try {
        if (this.warm.length < this.warmTarget) {
          const clone = await this.resumeClone(template, false);
          if (!clone) break; // the VM budget is spent: sessions come first
          await this.warmUp(clone, template);
          // Warmed, it waits with its vCPUs stopped: a pool of ready clones costs no CPU.
          await clone.freeze();
          await this.keep(this.warm, clone);
        } else if (this.prestarted.length < wantPrestarted) {
          const pooled = await this.prestart(template, false);
          if (!pooled) break;
          await this.keep(this.prestarted, pooled);
        } else {
          break;
        }
      } catch (err) {
        failures++;
        this.log.warn({ server: this.unit.name, err: (err as Error).message }, "could not add a clone to the pool");
      }
    }
    if (this.status.state === "building" && this.template) this.status.set("ready");
  }

  /** The harmless calls that make a waiting clone's first real call fast; a clone that fails them ends. */
  private async warmUp(clone: Sandbox, template: Template): Promise<void> {
    const vm = clone.vm as Vm;
    try {
      for (const member of this.unit.members) {
        await this.context.preparation.clone(serverChannel(vm.channel, member.name), member, preparedFor(template, member.name), member.timeouts.callMs);
      }
    } catch (err) {
      // Nothing else knows this clone yet: left running, it would hold a VM slot and its memory forever.
      void clone.destroy(`warm-up failed: ${(err as Error).message}`);
      throw err;
    }
  }

  /** Adds to a pool list, and drops the entry if it ends while waiting there; once closed, ends it. */
  private async keep(list: Sandbox[], sandbox: Sandbox): Promise<void> {
    if (this.closed) return sandbox.destroy("pool closed");
    list.push(sandbox);
    sandbox.on("closed", () => {
      const index = list.indexOf(sandbox);
      if (index >= 0) {
        list.splice(index, 1);
        this.refill();
      }
    });
  }

  /** Ends every sandbox of the unit, after the refill under way (what it starts is ended too). */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.refillTimer);
    clearTimeout(this.shrinkTimer);
    const ending = () => [...this.prestarted.splice(0), ...this.warm.splice(0), ...this.leased].map((s) => s.destroy("gateway shutting down"));
    const first = ending();
    await this.refilling;
    await Promise.allSettled([...first, ...ending()]);
  }
}
