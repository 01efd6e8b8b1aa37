/**
 * The egress link between the guest agent and the gateway: a second virtio-serial port, present only
 * in guests whose manifest grants `network` (docs/design/egress.md). This file is its specification;
 * the agent (sandbox/agent/egress/) and the gateway (src/egress/) both import it.
 *
 * The guest has no network device. The agent carries each connection a guest process opens, each DNS
 * question and each proxy client as one stream of an HTTP/2 session over this port (node's http2 on
 * both ends: streams, flow control and resets come from a well-tested implementation, not from us):
 *   GET /resolve?name=N        200 {"address": "1.2.3.4"}, or 403 with the reason in REASON_HEADER
 *   CONNECT, :authority H:P    200, then the stream carries the connection's bytes both ways; or 403
 *   POST /http-proxy           the bytes of a client of the HTTP proxy on 127.0.0.1:3128, parsed by
 *                              the gateway (CONNECT and absolute-form requests)
 * The guest is the HTTP/2 client and the gateway the server: the policy is the gateway's alone.
 *
 * Snapshots: a clone resumes with the template's HTTP/2 state in memory, and bytes of the old session
 * may still sit in the port's queues. So each session starts with a sync line: the agent writes
 * SYNC_PREFIX + a fresh nonce + "\n", the gateway discards everything before it and answers the same
 * line, and the agent discards everything before that answer; HTTP/2 starts right after. On `resume`
 * the agent drops its session and every connection it carried, and opens a new session when next needed.
 */
export const EGRESS_PORT_NAME = "mcpvisor.egress";
export const SYNC_PREFIX = "MCPVISOR-EGRESS/1 ";
/** Stale bytes a side discards before the sync line at most; past it the link is broken. */
export const MAX_SYNC_DISCARD = 8 * 1024 * 1024;
export const RESOLVE_PATH = "/resolve";
export const HTTP_PROXY_PATH = "/http-proxy";
export const REASON_HEADER = "mcpvisor-reason";
/** Where the agent serves DNS and the HTTP proxy inside the guest. */
export const GUEST_DNS_ADDRESS = "127.0.0.53";
export const GUEST_PROXY_PORT = 3128;

/** What the server spec (/srv/.mcpvisor/guest.json) says about egress: the ports the agent listens on. */
export interface EgressSpec {
  ports: number[];
}

/**
 * Finds a sync line in a byte stream: feed it chunks until it returns the line's nonce and the bytes
 * after it. `nonce`: the one expected (the agent); undefined accepts any (the gateway).
 */
export class SyncLineFinder {
  private buffered: Buffer = Buffer.alloc(0);
  private discarded = 0;

  constructor(private readonly nonce?: string) {}

  push(chunk: Buffer): { nonce: string; rest: Buffer } | undefined {
    this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
    const prefix = Buffer.from(SYNC_PREFIX);
    for (;;) {
      const at = this.buffered.indexOf(prefix);
      if (at < 0) {
        // Keep a tail that could be the start of the prefix; count the rest as discarded.
        this.drop(Math.max(0, this.buffered.length - prefix.length));
        return undefined;
      }
      const end = this.buffered.indexOf(10, at);
      if (end < 0) {
        this.drop(at);
        if (this.buffered.length > 256) this.drop(this.buffered.length); // a sync line is short
        return undefined;
      }
      const nonce = this.buffered.subarray(at + prefix.length, end).toString("latin1");
      if (/^[\w-]{8,64}$/.test(nonce) && (this.nonce === undefined || nonce === this.nonce)) {
        return { nonce, rest: Buffer.from(this.buffered.subarray(end + 1)) };
      }
      // Not ours (or a stale line cut short, whose "newline" is the real line's end): look again just
      // past this prefix, so a real sync line inside the candidate is still found.
      this.drop(at + 1);
    }
  }

  private drop(bytes: number): void {
    this.discarded += bytes;
    this.buffered = this.buffered.subarray(bytes);
    if (this.discarded > MAX_SYNC_DISCARD) throw new Error(`no egress sync line within ${MAX_SYNC_DISCARD} bytes`);
  }
}

export function syncLine(nonce: string): string {
  return `${SYNC_PREFIX}${nonce}\n`;
}
