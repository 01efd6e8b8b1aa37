import { createSocket } from "node:dgram";
import { once } from "node:events";
import { isIP } from "node:net";
import { AUTHORITATIVE_ANSWER, RECURSION_DESIRED, decode, encode, type Answer, type DecodedPacket } from "dns-packet";

const NXDOMAIN = 3;
const TTL_SECONDS = 60;

export interface DnsServer {
  address: string;
  port: number;
  /** Every name asked, lower-case without the final dot, in the order asked. */
  queries: string[];
  close(): Promise<void>;
}

/**
 * A real DNS server over UDP on 127.0.0.1 (random port), authoritative for `records`: name -> IPv4 or
 * IPv6 address, answered to A or AAAA queries accordingly. Another type asked of a known name gets an
 * empty answer (NODATA, as a real server would give); an unknown name gets NXDOMAIN.
 */
export async function startDnsServer(records: Record<string, string>): Promise<DnsServer> {
  const table = new Map<string, { type: "A" | "AAAA"; address: string }>();
  for (const [name, address] of Object.entries(records)) {
    const family = isIP(address);
    if (!family) throw new Error(`DNS record for ${name}: ${JSON.stringify(address)} is not an IPv4 or IPv6 address`);
    table.set(normalize(name), { type: family === 4 ? "A" : "AAAA", address });
  }

  const queries: string[] = [];
  const socket = createSocket("udp4");
  socket.on("message", (message, peer) => {
    let query: DecodedPacket;
    try {
      query = decode(message);
    } catch {
      return; // not a DNS message: dropped, as a real server does
    }
    if (query.type !== "query") return;
    const answers: Answer[] = [];
    let rcode = 0;
    for (const question of query.questions ?? []) {
      const name = normalize(question.name);
      queries.push(name);
      const record = table.get(name);
      if (!record) rcode = NXDOMAIN;
      else if (record.type === question.type) answers.push({ type: record.type, class: "IN", name: question.name, ttl: TTL_SECONDS, data: record.address });
    }
    const flags = AUTHORITATIVE_ANSWER | ((query.flags ?? 0) & RECURSION_DESIRED) | rcode;
    socket.send(encode({ type: "response", id: query.id, flags, questions: query.questions, answers }), peer.port, peer.address);
  });
  socket.bind(0, "127.0.0.1");
  await once(socket, "listening");

  const { address, port } = socket.address();
  return { address, port, queries, close: () => new Promise((resolve) => socket.close(() => resolve())) };
}

function normalize(name: string): string {
  return name.toLowerCase().replace(/\.$/, "");
}
