import type { BootedVm, EgressAttachment, GuestChannel, VmExit } from "../driver.js";
import type { AgentChannel } from "./agent-channel.js";
import type { QmpClient } from "./qmp.js";
import type { VmmProcess } from "./vmm-process.js";

/**
 * One QEMU process and its two connections (QMP and the agent channel), from its start to its end. The
 * same handle is the PendingVm a prestart returns and the Vm its resume returns.
 */
export class QemuVm {
  constructor(
    readonly process: VmmProcess,
    readonly qmp: QmpClient,
    readonly agent: AgentChannel,
    readonly egress: EgressAttachment | undefined,
    /** The file guest RAM is mapped from (copy-on-write for clones). */
    readonly ramPath: string,
    /** For a prestarted clone: the template's device state it loads, unless given a suspended one. */
    readonly templateStatePath?: string,
  ) {
    void process.exited.then(() => egress?.close());
  }

  get id(): string {
    return this.process.id;
  }

  get pid(): number {
    return this.process.pid;
  }

  get channel(): GuestChannel {
    return this.agent;
  }

  get exited(): Promise<VmExit> {
    return this.process.exited.then((exit) => {
      const server = this.agent.serverExit;
      if (!server) return exit;
      const { t: _, ...serverExit } = server;
      return { ...exit, serverExit };
    });
  }

  /**
   * Called once the guest runs: from then on a guest that breaks the channel (an oversized frame, a
   * closed port) cannot be talked to any more, and is ended. Before, the step that waits on it fails.
   */
  supervise(): this {
    this.agent.onClose((error) => void this.kill(`agent channel failed: ${error.message}`));
    return this;
  }

  /** Freezes and thaws, one at a time and in the order asked: a thaw always follows the freeze before it. */
  private running: Promise<void> = Promise.resolve();
  private stopped = false;

  get frozen(): boolean {
    return this.stopped;
  }

  freeze(): Promise<void> {
    return this.step(async () => {
      if (this.stopped) return;
      await this.qmp.execute("stop");
      this.stopped = true;
    });
  }

  thaw(): Promise<void> {
    return this.step(async () => {
      if (!this.stopped) return;
      await this.qmp.execute("cont");
      this.stopped = false;
      // The guest's clock stood still while its vCPUs did; the agent sets it before the next message.
      this.agent.setClock();
    });
  }

  childProcesses(timeoutMs: number): Promise<number> {
    return this.agent.childProcesses(timeoutMs);
  }

  private step(work: () => Promise<void>): Promise<void> {
    const next = this.running.then(work);
    this.running = next.catch(() => undefined);
    return next;
  }

  async kill(reason: string): Promise<void> {
    // The process records the first reason it is given: this one, not the channel closing as a result.
    const killed = this.process.kill(reason);
    this.agent.close();
    this.qmp.close();
    this.egress?.close();
    await killed;
  }
}

/** A cold-booted guest, whose agent said hello. */
export class BootedQemuVm extends QemuVm implements BootedVm {
  constructor(process: VmmProcess, qmp: QmpClient, agent: AgentChannel, egress: EgressAttachment | undefined, ramPath: string, readonly kernelRelease: string) {
    super(process, qmp, agent, egress, ramPath);
  }
}
