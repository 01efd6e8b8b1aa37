import type { RequestId } from "./messages.js";

/**
 * Server->client requests get ids of the gateway's own before they reach the client: two sources (two
 * servers, or two clones of one) count their ids from the same start. The client's answer is mapped
 * back to the source and the id it used.
 */
export class UpstreamIds<Source> {
  private readonly pending = new Map<string, { source: Source; id: RequestId }>();
  private next = 1;

  constructor(private readonly prefix: string) {}

  rename(source: Source, id: RequestId): string {
    const ours = `${this.prefix}:${this.next++}`;
    this.pending.set(ours, { source, id });
    return ours;
  }

  /** The source and original id of the answer with id `ours`, once. */
  take(ours: RequestId | undefined): { source: Source; id: RequestId } | undefined {
    if (ours === undefined) return undefined;
    const found = this.pending.get(String(ours));
    this.pending.delete(String(ours));
    return found;
  }
}
