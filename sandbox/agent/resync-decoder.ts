/**
 * FrameDecoder that survives an over-long line: protocol.ts's decoder throws FrameTooLargeError and keeps
 * throwing, which suits the host (it kills the VM) but not the agent, which has only one channel and must
 * keep serving. This drops the offending line up to its newline and carries on.
 */
import { FrameDecoder, FrameTooLargeError } from "./protocol.js";

export class ResyncingDecoder {
  private decoder: FrameDecoder;
  private skipping = false;

  constructor(private readonly maxFrameBytes?: number) {
    this.decoder = new FrameDecoder(maxFrameBytes);
  }

  /** `dropped` counts over-long lines discarded while handling this chunk. */
  push(chunk: Buffer): { frames: unknown[]; dropped: number } {
    const frames: unknown[] = [];
    let dropped = 0;
    for (;;) {
      if (this.skipping) {
        const nl = chunk.indexOf(10);
        if (nl === -1) return { frames, dropped };
        this.skipping = false;
        chunk = chunk.subarray(nl + 1);
      }
      try {
        frames.push(...this.decoder.push(chunk));
        return { frames, dropped };
      } catch (err) {
        if (!(err instanceof FrameTooLargeError)) throw err;
        // With chunks far below the limit the decoder can only throw on a line that started in earlier
        // chunks and ends (if at all) at this chunk's first newline: skip to it and decode the rest.
        this.decoder = new FrameDecoder(this.maxFrameBytes);
        this.skipping = true;
        dropped++;
      }
    }
  }
}
