import { isIP } from "node:net";
import type { NetworkGrant } from "../config/manifest.js";
import { canonicalAddress, isLoopback, isPublicAddress } from "./address-class.js";
import { HOST_INTERNAL, isValidName, nameMatches, normalizeName, parseDestination, type Destination } from "./destination.js";

/** What the guest is told `host.internal` is (QEMU's user-mode networking uses it for the host too). */
export const HOST_INTERNAL_GUEST_ADDRESS = "10.0.2.2";
/** The metrics label of a destination no entry covers; guest-chosen names never become label values. */
export const UNLISTED = "unlisted";

export interface Credential {
  header: string;
  value: string;
}

/** What the policy needs to know of the machine it runs on. */
export interface HostFacts {
  /** Resolves a name on the host: every address, IPv4 first. Throws when the name does not exist. */
  resolve(name: string): Promise<string[]>;
  /** Ports the gateway itself listens on: never reachable from a guest, whatever the manifest says. */
  gatewayPorts: ReadonlySet<number>;
  /** This machine's own addresses (IPv6 in canonical form, see canonicalAddress): never reachable as `public`. */
  hostAddresses: ReadonlySet<string>;
}

export type Verdict =
  | {
      allowed: true;
      /** The allow entry that granted it (a bounded metrics label). */
      label: string;
      /** The name the guest asked for (or the address), for TLS server names and logs. */
      host: string;
      /** The address checked, and the one connected to: there is no second lookup to rebind. */
      address: string;
      port: number;
      credential?: Credential;
    }
  | { allowed: false; label: string; reason: string };

export type NameAnswer = { ok: true; address: string } | { ok: false; label: string; reason: string };

/**
 * One server's egress policy, decided on the host for every connection and every name the guest asks
 * for; nothing the guest says is trusted beyond the name and port it wants (docs/design/egress.md).
 */
export class EgressPolicy {
  private readonly entries: Destination[];
  /** Distinct ports of the allow list: the guest agent listens on these. */
  readonly ports: number[];

  constructor(
    grant: NetworkGrant,
    private readonly credentials: ReadonlyMap<string, Credential>,
    private readonly host: HostFacts,
  ) {
    this.entries = grant.allow.map(parseDestination);
    this.ports = [...new Set(this.entries.map((e) => e.port))].sort((a, b) => a - b);
  }

  /** A DNS question from the guest: an address for a name some entry may cover, or why not. */
  async answerName(rawName: string): Promise<NameAnswer> {
    const name = normalizeName(rawName);
    if (name === HOST_INTERNAL) {
      return this.entries.some((e) => e.kind === "host")
        ? { ok: true, address: HOST_INTERNAL_GUEST_ADDRESS }
        : { ok: false, label: UNLISTED, reason: "host.internal is not in network.allow" };
    }
    const candidates = this.entries.filter((e) => nameMatches(e, name) || e.kind === "public");
    if (!isValidName(name) || candidates.length === 0) return { ok: false, label: UNLISTED, reason: `${rawName} is not in network.allow` };
    const label = (candidates.find((e) => e.kind !== "public") ?? candidates[0]!).label;
    const addresses = await this.lookup(name);
    if (addresses === undefined) return { ok: false, label, reason: `${name} does not resolve` };
    // Any port of a covering entry will do here; the connection itself is checked on its own port.
    const usable = addresses.filter((a) => isIP(a) === 4 && candidates.some((e) => this.addressAllowed(e, a, e.port)));
    if (usable.length === 0) {
      const reason = addresses.every((a) => isIP(a) === 6)
        ? `${name} resolves to IPv6 addresses only (${addresses.join(", ")}); guests reach IPv4 destinations only`
        : `${name} resolves to ${addresses.join(", ")}, which network.allow does not grant (DNS rebinding is refused)`;
      return { ok: false, label, reason };
    }
    return { ok: true, address: usable[0]! };
  }

  /** A connection the guest wants to open, to a name (or an address) and a port. */
  async decide(rawHost: string, port: number): Promise<Verdict> {
    // An address compares as a string (listed, the host's own), so in one form however the guest wrote it.
    if (isIP(rawHost)) return this.decideAddress(canonicalAddress(rawHost), port);
    const name = normalizeName(rawHost);
    if (name === HOST_INTERNAL) {
      const entry = this.entries.find((e) => e.kind === "host" && e.port === port);
      if (!entry) return { allowed: false, label: UNLISTED, reason: `host.internal:${port} is not in network.allow` };
      return this.allow(entry, HOST_INTERNAL, "127.0.0.1", port);
    }
    // The most specific entry first (the name itself, then the longest wildcard): it decides the label
    // and so the credential, whatever order the manifest lists them in.
    const named = this.entries.filter((e) => nameMatches(e, name) && e.port === port).sort((a, b) => specificity(b) - specificity(a));
    const candidates = [...named, ...this.entries.filter((e) => e.kind === "public" && e.port === port)];
    if (!isValidName(name) || candidates.length === 0) return { allowed: false, label: UNLISTED, reason: `${rawHost}:${port} is not in network.allow` };
    const label = candidates[0]!.label;
    const addresses = await this.lookup(name);
    if (addresses === undefined) return { allowed: false, label, reason: `${name} does not resolve` };
    for (const address of addresses) {
      const entry = candidates.find((e) => this.addressAllowed(e, address, port));
      if (entry) return this.allow(entry, name, address, port);
    }
    return { allowed: false, label, reason: `${name} resolves to ${addresses.join(", ")}, which network.allow does not grant on port ${port} (DNS rebinding is refused)` };
  }

  private decideAddress(address: string, port: number): Verdict {
    const entry = this.entries.find((e) => e.port === port && (e.kind === "address" || e.kind === "public") && this.addressAllowed(e, address, port));
    if (!entry) return { allowed: false, label: UNLISTED, reason: `${address}:${port} is not in network.allow` };
    return this.allow(entry, address, address, port);
  }

  /**
   * Whether `entry` lets a connection go to `address` on `port`. Named entries reach public addresses,
   * and a private one only when another entry grants that very address (or the host's loopback, for
   * host.internal); `public` never reaches the host's own addresses.
   */
  private addressAllowed(entry: Destination, address: string, port: number): boolean {
    const grantedExplicitly = this.entries.some(
      (e) => e.port === port && ((e.kind === "address" && e.address === address) || (e.kind === "host" && isLoopback(address))),
    );
    switch (entry.kind) {
      case "address":
        return entry.address === address;
      case "host":
        return isLoopback(address);
      case "public":
        return isPublicAddress(address) && !this.host.hostAddresses.has(address);
      case "name":
      case "wildcard":
        return grantedExplicitly || (isPublicAddress(address) && !this.host.hostAddresses.has(address));
    }
  }

  private allow(entry: Destination, host: string, address: string, port: number): Verdict {
    if (this.host.gatewayPorts.has(port) && (isLoopback(address) || this.host.hostAddresses.has(address))) {
      return { allowed: false, label: entry.label, reason: `${host}:${port} is the gateway's own port, which no sandbox may reach` };
    }
    const credential = this.credentials.get(entry.label);
    return { allowed: true, label: entry.label, host, address, port, ...(credential ? { credential } : {}) };
  }

  private async lookup(name: string): Promise<string[] | undefined> {
    try {
      const addresses = await this.host.resolve(name);
      return addresses.length ? addresses.map(canonicalAddress) : undefined;
    } catch {
      return undefined;
    }
  }
}

/** How narrowly a name entry covers names: an exact name beats any wildcard, a longer suffix a shorter one. */
function specificity(entry: Destination): number {
  if (entry.kind === "name") return Number.MAX_SAFE_INTEGER;
  return entry.kind === "wildcard" ? entry.suffix.length : 0;
}
