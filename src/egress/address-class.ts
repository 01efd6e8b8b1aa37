import { BlockList, isIP } from "node:net";
import { networkInterfaces } from "node:os";

/**
 * Addresses `public` never covers: loopback, private (RFC 1918, ULA), link-local (with the cloud
 * metadata address 169.254.169.254), CGNAT, benchmarking, documentation, multicast and reserved
 * ranges, and IPv6 forms that embed an IPv4 address (mapped, NAT64), which could hide any of them.
 * One list per family: node's BlockList matches an IPv4 address against IPv6 rules as its mapped form
 * (::ffff:a.b.c.d), so a single list with ::ffff:0:0/96 in it would hold every IPv4 address.
 */
const NOT_PUBLIC_V4 = new BlockList();
for (const [net, prefix] of [
  ["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16], ["172.16.0.0", 12],
  ["192.0.0.0", 24], ["192.0.2.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15], ["198.51.100.0", 24],
  ["203.0.113.0", 24], ["224.0.0.0", 4], ["240.0.0.0", 4],
] as const) NOT_PUBLIC_V4.addSubnet(net, prefix, "ipv4");
const NOT_PUBLIC_V6 = new BlockList();
for (const [net, prefix] of [
  // Unspecified, loopback and IPv4-compatible (::a.b.c.d), mapped, NAT64 (well-known and local-use),
  // discard, Teredo, documentation, 6to4, ULA, link-local, multicast.
  ["::", 96], ["::ffff:0:0", 96], ["64:ff9b::", 96], ["64:ff9b:1::", 48], ["100::", 64], ["2001::", 32], ["2001:db8::", 32],
  ["2002::", 16], ["fc00::", 7], ["fe80::", 10], ["ff00::", 8],
] as const) NOT_PUBLIC_V6.addSubnet(net, prefix, "ipv6");

/** Whether `address` is a public unicast address (before considering the host's own addresses). */
export function isPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return !NOT_PUBLIC_V4.check(address, "ipv4");
  if (family === 6) return !NOT_PUBLIC_V6.check(address, "ipv6");
  return false;
}

/**
 * An IP address in the one form node prints (IPv6 lower case and compressed), so that comparing two
 * addresses as strings compares the addresses; anything else unchanged.
 */
export function canonicalAddress(address: string): string {
  if (isIP(address) !== 6) return address;
  try {
    return new URL(`http://[${address}]/`).hostname.slice(1, -1);
  } catch {
    return address; // a zone id (fe80::1%eth0): never public, never listed
  }
}

export function isLoopback(address: string): boolean {
  return isIP(address) === 4 ? address.startsWith("127.") : address === "::1";
}

/** Every address of this machine's interfaces: `public` must never reach the host through one of them. */
export function hostAddresses(): Set<string> {
  const own = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const entry of list ?? []) own.add(canonicalAddress(entry.address.replace(/%.*$/, "")));
  return own;
}
