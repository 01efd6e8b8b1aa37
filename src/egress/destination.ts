import { isIP } from "node:net";
import { canonicalAddress } from "./address-class.js";

/**
 * One entry of a manifest's `network.allow`, parsed. The syntax, with a port always required:
 *   host.internal:5432     the machine the gateway runs on, on that port only
 *   public:443             any address outside loopback, private, link-local, CGNAT and the host's own
 *   api.github.com:443     that name (resolved on the host)
 *   *.example.com:443      any name under example.com (not example.com itself)
 *   10.0.0.5:5432, [fd00::5]:5432   that address (also what lets a listed name resolve to it)
 */
export type Destination =
  | { kind: "host"; port: number; label: string }
  | { kind: "public"; port: number; label: string }
  | { kind: "name"; name: string; port: number; label: string }
  | { kind: "wildcard"; suffix: string; port: number; label: string }
  | { kind: "address"; address: string; port: number; label: string };

export const HOST_INTERNAL = "host.internal";

/** A DNS name as RFC 1123 allows it (labels of letters, digits and inner hyphens), lower-cased. */
const NAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

export class DestinationSyntaxError extends Error {}

/** A name as a client wrote it: lower case, without the root's trailing dot. */
export function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, "");
}

export function isValidName(name: string): boolean {
  return NAME.test(name);
}

export function parseDestination(text: string): Destination {
  const match = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(text.trim());
  if (!match) throw new DestinationSyntaxError(`'${text}' is not HOST:PORT (a port is required, e.g. api.github.com:443)`);
  const port = Number(match[2]);
  if (port < 1 || port > 65535) throw new DestinationSyntaxError(`'${text}': port ${port} is outside 1-65535`);
  const host = match[1]!;
  if (host.startsWith("[")) {
    if (isIP(host.slice(1, -1)) !== 6) throw new DestinationSyntaxError(`'${text}': ${host} is not an IPv6 address`);
    const address = canonicalAddress(host.slice(1, -1));
    return { kind: "address", address, port, label: `[${address}]:${port}` };
  }
  if (isIP(host) === 4) return { kind: "address", address: host, port, label: `${host}:${port}` };
  const name = normalizeName(host);
  if (name === HOST_INTERNAL) return { kind: "host", port, label: `${HOST_INTERNAL}:${port}` };
  if (name === "public") return { kind: "public", port, label: `public:${port}` };
  if (name.startsWith("*.")) {
    const suffix = name.slice(2);
    if (!isValidName(suffix) || !suffix.includes(".")) {
      throw new DestinationSyntaxError(`'${text}': a wildcard needs a domain of at least two labels after '*.', e.g. *.example.com:443`);
    }
    return { kind: "wildcard", suffix, port, label: `*.${suffix}:${port}` };
  }
  if (!isValidName(name)) throw new DestinationSyntaxError(`'${text}': '${host}' is not a host name, an IP address, host.internal or public`);
  return { kind: "name", name, port, label: `${name}:${port}` };
}

/** Whether `name` (normalized) is one a named or wildcard entry covers. */
export function nameMatches(destination: Destination, name: string): boolean {
  if (destination.kind === "name") return destination.name === name;
  if (destination.kind === "wildcard") return name.endsWith(`.${destination.suffix}`);
  return false;
}
