import { ServerManifestSchema, type ServerManifest } from "../config/manifest.js";
import { sandboxUnits } from "../config/sandbox-unit.js";
import { mcpPreparation } from "../router/catalog.js";
import { createLogger } from "../telemetry/log.js";
import { events, flushTelemetry, type SandboxTransitionRecord } from "../telemetry/events.js";
import { scratchDir } from "../../test/scratch-dir.js";
export { eventually } from "../../test/eventually.js";
import { FAKE_VM_SPEC, FaultInjectingDriver } from "./fault-injecting-driver.js";
import { SandboxPool } from "./pool.js";
import { TemplateStore } from "./template.js";
import type { Vm } from "./driver.js";
import type { VmBudgetLimits } from "./vm-budget.js";

/** A manifest for the fault-injecting driver's guest; nothing of it is built. */
export function fakeManifest(overrides: Record<string, unknown> = {}): ServerManifest {
  return ServerManifestSchema.parse({
    name: "fake",
    source: { kind: "bundle", entry: "none" },
    command: "none",
    pool: { prestarted: 0, warm: 0 },
    timeouts: { callMs: 2_000, idleSuspendMs: 0 },
    ...overrides,
  });
}

/**
 * A SandboxPool on the FaultInjectingDriver (a fake VMM: no image, no QEMU), with MCP preparation as
 * in the gateway, for pool, lease and router unit tests.
 */
export async function fakePool(
  manifests: ServerManifest[] = [fakeManifest()],
  options: { limits?: VmBudgetLimits; runSlots?: number; runSliceMs?: number; warmShrinkAfterMs?: number; arm?: (driver: FaultInjectingDriver) => void } = {},
) {
  const { limits, runSlots, runSliceMs, warmShrinkAfterMs, arm } = options;
  const driver = new FaultInjectingDriver();
  arm?.(driver);
  /** Every VM a resume returned, newest last: what a test crashes or inspects. */
  const vms: Vm[] = [];
  const resume = driver.resume.bind(driver);
  driver.resume = async (...args) => {
    const vm = await resume(...args);
    vms.push(vm);
    return vm;
  };
  const dir = await scratchDir("mcpv-fakepool");
  const log = createLogger("silent");
  const pool = new SandboxPool({
    driver,
    templates: new TemplateStore(driver, dir, log, mcpPreparation),
    preparation: mcpPreparation,
    log,
    suspendDir: `${dir}/suspended`,
    ...(limits ? { limits } : {}),
    ...(runSlots !== undefined ? { runSlots } : {}),
    ...(runSliceMs !== undefined ? { runSliceMs } : {}),
    ...(warmShrinkAfterMs !== undefined ? { warmShrinkAfterMs } : {}),
  });
  for (const unit of sandboxUnits(manifests, dir)) pool.add(unit, Promise.resolve(FAKE_VM_SPEC));
  await Promise.all(manifests.map((m) => pool.template(m.name)));
  return { driver, pool, dir, vms };
}

/** Every sandbox transition published while the returned recorder is on, by sandbox id. */
export function recordTransitions(): { edges(id?: string): string[]; clear(): void; stop(): void } {
  const seen: SandboxTransitionRecord[] = [];
  const listener = (record: unknown) => void seen.push(record as SandboxTransitionRecord);
  events.sandboxTransition.subscribe(listener);
  return {
    edges(id) {
      flushTelemetry();
      return seen.filter((r) => id === undefined || r.sandboxId === id).map((r) => `${r.from}>${r.to}`);
    },
    clear() {
      flushTelemetry();
      seen.length = 0;
    },
    stop: () => events.sandboxTransition.unsubscribe(listener),
  };
}

