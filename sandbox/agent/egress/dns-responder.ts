/**
 * DNS for the guest, on 127.0.0.53:53 (the guest's resolv.conf): A questions are asked of the gateway,
 * which answers only names the policy covers, with the address it checked. AAAA gets an empty answer
 * for names that exist (connections go over IPv4; every IPv4 address is routed to loopback in the
 * guest, see ./tcp-forwarder.ts). Everything else is refused.
 */
import * as dgram from "node:dgram";
import dnsPacket from "dns-packet";
import { GUEST_DNS_ADDRESS } from "../egress-protocol.js";
import type { EgressLink, NameAnswer } from "./egress-link.js";

const TTL_SECONDS = 5;
/** Response codes go in the low four bits of the flags (RFC 1035 4.1.1). */
const NXDOMAIN = 3;
const REFUSED = 5;
const FLAGS = dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE;
const CACHE_MS = TTL_SECONDS * 1000;

export class DnsResponder {
  private readonly socket = dgram.createSocket("udp4");
  private readonly cache = new Map<string, { answer: Promise<NameAnswer>; at: number }>();
  /** The names behind each address the guest was given: a connection to it is carried as that name. */
  readonly names = new Map<string, string>();

  constructor(private readonly link: EgressLink) {
    this.socket.on("message", (message, peer) => void this.answer(message, peer));
    this.socket.on("error", () => undefined);
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.once("error", reject);
      this.socket.bind(53, GUEST_DNS_ADDRESS, () => resolve());
    });
  }

  /** Answers learnt before a resume may be stale for the new host moment; ask again. */
  forget(): void {
    this.cache.clear();
  }

  private lookup(name: string): Promise<NameAnswer> {
    const key = name.toLowerCase();
    const hit = this.cache.get(key);
    if (hit && Date.now() - hit.at < CACHE_MS) return hit.answer;
    const answer = this.link.resolve(key).then((a) => {
      if (a.ok) this.names.set(a.address, key);
      return a;
    });
    this.cache.set(key, { answer, at: Date.now() });
    if (this.cache.size > 1024) this.cache.delete(this.cache.keys().next().value!);
    return answer;
  }

  private async answer(message: Buffer, peer: dgram.RemoteInfo): Promise<void> {
    let query: dnsPacket.Packet;
    try {
      query = dnsPacket.decode(message);
    } catch {
      return;
    }
    const question = query.questions?.[0];
    if (!question) return;
    const reply: dnsPacket.Packet = { id: query.id, type: "response", flags: FLAGS, questions: [question], answers: [] };
    if (question.type === "A" || question.type === "AAAA") {
      const answer = await this.lookup(question.name);
      if (!answer.ok) reply.flags = FLAGS | NXDOMAIN;
      else if (question.type === "A") reply.answers = [{ type: "A", name: question.name, ttl: TTL_SECONDS, data: answer.address }];
    } else {
      reply.flags = FLAGS | REFUSED;
    }
    this.socket.send(dnsPacket.encode(reply), peer.port, peer.address);
  }

  close(): void {
    this.socket.close();
  }
}
