import { IllegalTransitionError } from "./errors.js";

/**
 * The sandbox lifecycle (docs/design/lifecycle.md):
 *   pooled -> resuming -> idle <-> active;  idle -> suspending -> suspended -> resuming.
 * Any state may go to `destroyed`, which is final.
 */
export type SandboxState = "pooled" | "resuming" | "active" | "idle" | "suspending" | "suspended" | "destroyed";

const EDGES: Record<SandboxState, readonly SandboxState[]> = {
  pooled: ["resuming", "destroyed"],
  resuming: ["idle", "destroyed"],
  idle: ["active", "suspending", "destroyed"],
  active: ["idle", "destroyed"],
  suspending: ["suspended", "idle", "destroyed"],
  suspended: ["resuming", "destroyed"],
  destroyed: [],
};

export function canTransition(from: SandboxState, to: SandboxState): boolean {
  return EDGES[from].includes(to);
}

export interface TransitionEvent {
  from: SandboxState;
  to: SandboxState;
}

/** Holds one sandbox's state; every change goes through `transition`, which rejects illegal edges. */
export class Lifecycle {
  private current: SandboxState;
  private readonly listeners = new Set<(event: TransitionEvent) => void>();

  constructor(initial: SandboxState = "pooled") {
    this.current = initial;
  }

  get state(): SandboxState {
    return this.current;
  }

  transition(to: SandboxState): void {
    const from = this.current;
    if (!canTransition(from, to)) {
      throw new IllegalTransitionError(`sandbox cannot go from ${from} to ${to}`);
    }
    this.current = to;
    for (const listener of this.listeners) listener({ from, to });
  }

  onTransition(listener: (event: TransitionEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
