import { BusyError, PoolClosedError, SandboxError } from "./errors.js";

export interface VmBudgetLimits {
  /** VMs (QEMU processes: prestarted, warm and leased) allowed at once. */
  maxVms: number;
  /** Acquisitions that may wait for a free slot; past it, the caller is told the gateway is busy. */
  maxQueue: number;
  /** How long one may wait before it is told the gateway is busy. */
  queueTimeoutMs: number;
}

interface Waiter {
  resolve: () => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * A global cap on VMs, so load can never pile up processes until the host runs out of memory. Pool
 * refills take a slot only when one is free; a session that needs a VM may first reclaim one of the
 * pools' idle VMs, then waits in a bounded queue, then gets a clear BUSY error.
 */
export class VmBudget {
  private used = 0;
  private readonly waiters: Waiter[] = [];

  constructor(
    private readonly limits: VmBudgetLimits,
    /** Ends one idle pooled VM somewhere (its slot comes back when it exits); false when there is none. */
    private readonly reclaim: () => boolean,
  ) {}

  get inUse(): number {
    return this.used;
  }

  get queued(): number {
    return this.waiters.length;
  }

  tryTake(): boolean {
    if (this.used >= this.limits.maxVms) return false;
    this.used++;
    return true;
  }

  /** Takes a slot, waiting for one if needed; rejects with BUSY when the queue is full or the wait too long. */
  take(): Promise<void> {
    if (this.tryTake()) return Promise.resolve();
    this.reclaim();
    if (this.waiters.length >= this.limits.maxQueue) return Promise.reject(this.busy("the wait queue is full"));
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.splice(this.waiters.indexOf(waiter), 1);
          reject(this.busy(`no VM became free within ${this.limits.queueTimeoutMs} ms`));
        }, this.limits.queueTimeoutMs),
      };
      this.waiters.push(waiter);
    });
  }

  /** Returns a slot; the longest waiter gets it. */
  release(): void {
    const next = this.waiters.shift();
    if (next) {
      clearTimeout(next.timer);
      next.resolve();
    } else {
      this.used--;
    }
  }

  /** Fails every waiter (shutdown). */
  close(): void {
    for (const waiter of this.waiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(new PoolClosedError("the gateway is shutting down"));
    }
  }

  private busy(why: string): SandboxError {
    return new BusyError(`all ${this.limits.maxVms} VMs this gateway may run are in use and ${why}; retry shortly`);
  }
}
