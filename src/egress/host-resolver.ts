import { promises as dns } from "node:dns";

/**
 * Name resolution on the host, for the policy: the system resolver (getaddrinfo: /etc/hosts, then DNS),
 * or the DNS servers the operator names (`egressResolver`), asked directly. Every address, IPv4 first.
 */
export function hostResolver(servers: string[]): (name: string) => Promise<string[]> {
  if (servers.length === 0) {
    return async (name) => (await dns.lookup(name, { all: true, order: "ipv4first" })).map((a) => a.address);
  }
  const resolver = new dns.Resolver({ timeout: 3_000, tries: 2 });
  resolver.setServers(servers);
  return async (name) => {
    const [v4, v6] = await Promise.allSettled([resolver.resolve4(name), resolver.resolve6(name)]);
    const all = [...(v4.status === "fulfilled" ? v4.value : []), ...(v6.status === "fulfilled" ? v6.value : [])];
    if (all.length === 0) throw new Error(`${name} does not resolve`);
    return all;
  };
}
