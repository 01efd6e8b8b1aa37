import { IllegalTransitionError } from "./errors.js";

/**
 * The sandbox lifecycle (docs/design/lifecycle.md):
 *   pooled -> resuming -> idle <-> active;  idle -> suspending -> suspended -> resuming.
 * A suspend that fails goes back to idle. Any state may go to `destroyed`, which is final; a destroy
 * that lands while a suspend runs takes the `suspending -> destroyed` edge, and the suspend's outcome
 * is then discarded.
 */
export type SandboxState = "pooled" | "resuming" | "active" | "idle" | "suspending" | "suspended" | "destroyed";

const SANDBOX_EDGES: Record<SandboxState, readonly SandboxState[]> = {
  pooled: ["resuming", "destroyed"],
  resuming: ["idle", "destroyed"],
  idle: ["active", "suspending", "destroyed"],
  active: ["idle", "destroyed"],
  suspending: ["suspended", "idle", "destroyed"],
  suspended: ["resuming", "destroyed"],
  destroyed: [],
};

/**
 * A server's template: `building` (image or template under construction, also a rebuild after clones
 * failed to resume), `ready`, or `failed` (the build failed; the server cannot be hosted until restart).
 */
export type TemplateState = "building" | "ready" | "failed";

const TEMPLATE_EDGES: Record<TemplateState, readonly TemplateState[]> = {
  building: ["ready", "failed"],
  ready: ["building"],
  failed: [],
};

export function canTransition(from: SandboxState, to: SandboxState): boolean {
  return SANDBOX_EDGES[from].includes(to);
}

export function canTemplateTransition(from: TemplateState, to: TemplateState): boolean {
  return TEMPLATE_EDGES[from].includes(to);
}

/** Throws unless `from -> to` is an edge of the sandbox table. */
export function checkTransition(what: string, from: SandboxState, to: SandboxState): void {
  if (!canTransition(from, to)) throw new IllegalTransitionError(`${what} cannot go from ${from} to ${to}`);
}

/** A template's status with its reason; every change goes through the table. */
export class TemplateStatus {
  private current: TemplateState = "building";
  reason: string | undefined;

  constructor(reason: string) {
    this.reason = reason;
  }

  get state(): TemplateState {
    return this.current;
  }

  /** Moves to `to`; `reason` says why it is not ready (undefined once ready). */
  set(to: TemplateState, reason?: string): void {
    if (this.current === to) {
      this.reason = reason;
      return;
    }
    if (!canTemplateTransition(this.current, to)) throw new IllegalTransitionError(`template cannot go from ${this.current} to ${to}`);
    this.current = to;
    this.reason = reason;
  }
}
