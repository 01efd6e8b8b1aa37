import { randomBytes } from "node:crypto";
import type { Socket } from "node:net";
import {
  AGENT_PROTOCOL_VERSION,
  encodeFrame,
  FrameDecoder,
  type GuestFrame,
  type HostFrame,
  type JsonRpcMessage,
} from "../../../sandbox/agent/protocol.js";
import type { GuestChannel } from "../driver.js";
import { AgentProtocolError, AgentTimeoutError, GuestExitedError, SandboxClosedError } from "../errors.js";

type Hello = Extract<GuestFrame, { t: "hello" }>;
type Resumed = Extract<GuestFrame, { t: "resumed" }>;
type Pong = Extract<GuestFrame, { t: "pong" }>;
type Children = Extract<GuestFrame, { t: "children" }>;
export type ServerExit = Extract<GuestFrame, { t: "exit" }>;

/**
 * The host end of the guest agent's virtio-serial port (a socketpair with QEMU, see vmm-process.ts).
 * Carries MCP messages unchanged and the agent's control frames (sandbox/agent/protocol.ts).
 */
export class AgentChannel implements GuestChannel {
  private readonly decoder = new FrameDecoder();
  private readonly mcpListeners = new Set<(server: string, message: JsonRpcMessage, guestMs?: number) => void>();
  private readonly waiters = new Map<string, (frame: GuestFrame) => void>();
  private nextControlId = 1;
  private hello: Hello | undefined;
  private helloWaiter: ((hello: Hello) => void) | undefined;
  private closedError: Error | undefined;
  private readonly closeListeners = new Set<(error: Error) => void>();
  /** Set when the agent reports that a hosted server exited. */
  serverExit: ServerExit | undefined;

  /** `onAgentError`: what the agent reports it could not do (its `error` frames); the channel goes on. */
  constructor(
    private readonly socket: Socket,
    private readonly onAgentError: (message: string) => void = () => undefined,
  ) {
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err) => this.fail(new AgentProtocolError(`agent socket: ${err.message}`, { cause: err })));
    socket.on("close", () => this.fail(new GuestExitedError("agent channel closed")));
  }

  private onData(chunk: Buffer): void {
    let frames: unknown[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      this.fail(new AgentProtocolError("guest sent an oversized frame", { cause: err }));
      return;
    }
    for (const frame of frames) this.dispatch(frame as GuestFrame);
  }

  private dispatch(frame: GuestFrame): void {
    switch (frame.t) {
      case "mcp":
        for (const listener of this.mcpListeners) listener(frame.s, frame.msg, frame.guestMs);
        return;
      case "hello": {
        const version: unknown = frame.v;
        if (version !== AGENT_PROTOCOL_VERSION) {
          this.fail(
            new AgentProtocolError(
              `the guest agent speaks protocol version ${String(version)}, this gateway version ${AGENT_PROTOCOL_VERSION}: ` +
                "the guest image was built by another mcpvisor; rebuild it with this one (mcpvisor build)",
            ),
          );
          return;
        }
        this.hello = frame;
        this.helloWaiter?.(frame);
        return;
      }
      case "resumed":
      case "pong":
      case "children":
        this.waiters.get(`${frame.t}:${frame.id}`)?.(frame);
        return;
      case "exit":
        this.serverExit = frame;
        return;
      case "error":
        this.onAgentError(frame.message);
        return;
      default:
        return;
    }
  }

  private fail(error: Error): void {
    if (this.closedError) return;
    this.closedError = error;
    this.socket.destroy();
    for (const listener of this.closeListeners) listener(error);
  }

  onClose(listener: (error: Error) => void): void {
    if (this.closedError) listener(this.closedError);
    else this.closeListeners.add(listener);
  }

  private write(frame: HostFrame): void {
    if (this.closedError) throw this.closedError;
    this.socket.write(encodeFrame(frame));
  }

  send(server: string, message: JsonRpcMessage): void {
    this.write({ t: "mcp", s: server, msg: message });
  }

  onMessage(listener: (server: string, message: JsonRpcMessage, guestMs?: number) => void): () => void {
    this.mcpListeners.add(listener);
    return () => this.mcpListeners.delete(listener);
  }

  waitForHello(timeoutMs: number): Promise<Hello> {
    if (this.hello) return Promise.resolve(this.hello);
    return this.withDeadline("hello", timeoutMs, (resolve) => {
      this.helloWaiter = resolve;
    });
  }

  /** After a restore: set the guest clock and give it fresh entropy before anything else happens. */
  resume(timeoutMs: number): Promise<Resumed> {
    const id = this.nextControlId++;
    return this.request<Resumed>(`resumed:${id}`, timeoutMs, {
      t: "resume",
      id,
      timeMs: Date.now(),
      seed: randomBytes(64).toString("base64"),
    });
  }

  /** After a thaw: the guest clock stood still while frozen. Unanswered; see the protocol. */
  setClock(): void {
    this.write({ t: "clock", timeMs: Date.now(), seed: randomBytes(32).toString("base64") });
  }

  async childProcesses(timeoutMs: number): Promise<number> {
    const id = this.nextControlId++;
    return (await this.request<Children>(`children:${id}`, timeoutMs, { t: "children", id })).count;
  }

  async ping(timeoutMs: number): Promise<{ serverAlive: boolean; uptimeMs: number; stderrTail: string }> {
    const id = this.nextControlId++;
    const { serverAlive, uptimeMs, stderrTail } = await this.request<Pong>(`pong:${id}`, timeoutMs, { t: "ping", id });
    return { serverAlive, uptimeMs, stderrTail };
  }

  /** Sends a control frame and waits for the reply keyed `key`; a closed channel rejects at once. */
  private request<T extends GuestFrame>(key: string, timeoutMs: number, frame: HostFrame): Promise<T> {
    return this.withDeadline<T>(key, timeoutMs, (resolve) => {
      this.waiters.set(key, (reply) => resolve(reply as T));
      this.write(frame);
    }).finally(() => this.waiters.delete(key));
  }

  private withDeadline<T>(what: string, timeoutMs: number, arm: (resolve: (v: T) => void) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.closedError) return reject(this.closedError);
      const timer = setTimeout(
        () => reject(new AgentTimeoutError(`guest agent did not send ${what.split(":")[0]} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const onClose = (error: Error) => {
        clearTimeout(timer);
        reject(error);
      };
      this.closeListeners.add(onClose);
      try {
        arm((value) => {
          clearTimeout(timer);
          this.closeListeners.delete(onClose);
          resolve(value);
        });
      } catch (err) {
        onClose(err as Error);
      }
    });
  }

  close(): void {
    this.fail(new SandboxClosedError("agent channel closed by the host"));
  }
}
