/** Connections open across every sandbox: a guest cannot spend the gateway's file descriptors. */
export class ConnectionBudget {
  private inUse = 0;

  constructor(readonly max: number) {}

  tryTake(): boolean {
    if (this.inUse >= this.max) return false;
    this.inUse++;
    return true;
  }

  release(): void {
    this.inUse = Math.max(0, this.inUse - 1);
  }

  get used(): number {
    return this.inUse;
  }
}

/** Bytes one sandbox moved in the current minute (a fixed window: simple, and enough for a cap). */
export class ByteWindow {
  private windowStart = Date.now();
  private bytes = 0;

  constructor(readonly maxPerMinute: number) {}

  add(n: number): void {
    this.roll();
    this.bytes += n;
  }

  exceeded(): boolean {
    this.roll();
    return this.bytes >= this.maxPerMinute;
  }

  private roll(): void {
    const now = Date.now();
    if (now - this.windowStart >= 60_000) {
      this.windowStart = now;
      this.bytes = 0;
    }
  }
}
