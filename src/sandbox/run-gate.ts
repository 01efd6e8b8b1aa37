/**
 * How many guests may run a request at once (docs/design/run-gate.md). Past that, a sandbox's request
 * waits here, in arrival order, rather than in the host's scheduler: under TCG, 32 guests time-sliced
 * on 2 cores spend several times more CPU per call than the same calls run a few at a time (each
 * switch starts a guest with cold caches). A slot is given back when the sandbox has no request in
 * flight, or after `sliceMs` whichever comes first, so a long call (a build, a wait on the network, a
 * sampling round trip) never holds up the others: past its slice it runs beside them, unqueued.
 */
export class RunGate {
  private running = 0;
  private readonly waiting: Array<(leave: () => void) => void> = [];

  constructor(
    /** Slots; 0 lets every request through at once. */
    readonly slots: number,
    readonly sliceMs: number,
  ) {}

  /**
   * Calls `granted` once a slot is free (at once if one is), with the function that gives it back.
   * Giving it back twice is harmless; the slice's end gives it back by itself.
   */
  enter(granted: (leave: () => void) => void): void {
    if (this.slots === 0) return granted(() => undefined);
    if (this.running < this.slots) return this.grant(granted);
    this.waiting.push(granted);
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
    const slice = setTimeout(leave, this.sliceMs).unref();
    granted(leave);
  }
}
