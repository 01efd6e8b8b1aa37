const LOOPBACK_NAMES = ["localhost", "127.0.0.1", "[::1]", "::1"];

/**
 * DNS-rebinding protection: a web page on evil.example can resolve its name to 127.0.0.1 and reach the
 * gateway from a browser, but its requests still carry `Host: evil.example` (and its Origin). Only
 * names this gateway answers to are accepted: the loopback names, the bound address, and configured ones.
 */
export class HostPolicy {
  private readonly allowed: Set<string>;

  constructor(bindHost: string, extra: string[]) {
    this.allowed = new Set([...LOOPBACK_NAMES, bindHost, ...extra].map((h) => h.toLowerCase()));
  }

  /** Returns why the request is refused, or undefined when it may proceed. */
  refusal(host: string | undefined, origin: string | undefined): string | undefined {
    if (!host) return "missing Host header";
    if (!this.allowed.has(hostname(host))) return `Host '${host}' is not allowed`;
    if (origin && origin !== "null") {
      let originHost: string;
      try {
        originHost = new URL(origin).host;
      } catch {
        return `Origin '${origin}' is not a URL`;
      }
      if (!this.allowed.has(hostname(originHost))) return `Origin '${origin}' is not allowed`;
    }
    return undefined;
  }
}

/** What a refused client is told (403), from `HostPolicy.refusal`'s reason. */
export function forbidden(why: string): string {
  return `Forbidden: ${why}; add the name to allowedHosts (MCPVISOR_ALLOWED_HOSTS) if it is yours`;
}

/** `name:port` or `[v6]:port` to the bare lower-cased name (brackets kept for IPv6, as in URLs). */
function hostname(hostHeader: string): string {
  const h = hostHeader.toLowerCase();
  if (h.startsWith("[")) return h.slice(0, h.indexOf("]") + 1);
  const colon = h.lastIndexOf(":");
  return colon === -1 ? h : h.slice(0, colon);
}
