/**
 * A number of slots, granted in arrival order. Two gates use it (docs/design/run-gate.md):
 *
 * - the **run gate**: how many guests may run a request at once. Past that, a sandbox's request waits
 *   here rather than in the host's scheduler: under TCG, 32 guests time-sliced on 2 cores spend
 *   several times more CPU per call than the same calls run a few at a time. Its slots have a slice: a
 *   request running longer (a build, a wait on the network, a sampling round trip) gives its slot up
 *   and runs on beside the others, so it never holds them up;
 * - the **suspend gate**: how many idle sandboxes are saved to disk at once. Each save streams the
 *   guest's RAM through the gateway; many at once shared the CPU until each took seconds, and a
 *   sandbox is unavailable while it is being saved. Waiting for a turn, it stays running (frozen).
 */
export class SlotGate {
  private running = 0;
  private readonly waiting: Array<(leave: () => void) => void> = [];

  constructor(
    /** Slots; 0 lets everyone through at once. */
    readonly slots: number,
    /** A slot held this long is given back by itself. */
    readonly sliceMs?: number,
  ) {}

  /**
   * Calls `granted` once a slot is free (at once if one is), with the function that gives it back.
   * Giving it back twice is harmless.
   */
  enter(granted: (leave: () => void) => void): void {
    if (this.slots === 0) return granted(() => undefined);
    if (this.running < this.slots) return this.grant(granted);
    this.waiting.push(granted);
  }

  /** `enter`, as a promise of the function that gives the slot back. */
  turn(): Promise<() => void> {
    return new Promise((resolve) => this.enter(resolve));
  }

  stats(): { running: number; waiting: number } {
    return { running: this.running, waiting: this.waiting.length };
  }

  private grant(granted: (leave: () => void) => void): void {
    this.running++;
    let held = true;
    const leave = () => {
      if (!held) return;
      held = false;
      clearTimeout(slice);
      this.running--;
      const next = this.waiting.shift();
      if (next) this.grant(next);
    };
    const slice = this.sliceMs === undefined ? undefined : setTimeout(leave, this.sliceMs).unref();
    granted(leave);
  }
}
