/**
 * Egress inside the guest, for servers whose manifest grants `network` (../egress-protocol.ts): a local
 * default route to loopback, DNS on 127.0.0.53, listeners on the allowed ports and the HTTP proxy.
 * Everything is set up before the hosted server starts, so it is part of the template snapshot.
 */
import { spawnSync } from "node:child_process";
import { logAgent, openDeviceChannel } from "../channel.js";
import { EGRESS_PORT_NAME, type EgressSpec } from "../egress-protocol.js";
import { DnsResponder } from "./dns-responder.js";
import { EgressLink } from "./egress-link.js";
import { TcpForwarder } from "./tcp-forwarder.js";

export interface Egress {
  /** After a snapshot resume: drop the link's session, its connections and cached answers. */
  reset(): void;
}

export async function startEgress(spec: EgressSpec): Promise<Egress> {
  // Every IPv4 address is local: a connect to any of them reaches a listener of ours (or is refused).
  const route = spawnSync("ip", ["route", "add", "local", "default", "dev", "lo", "table", "local"], { encoding: "utf8" });
  if (route.status !== 0) logAgent(`egress: local route failed: ${route.stderr.trim()}`);
  const link = new EgressLink(await openDeviceChannel(EGRESS_PORT_NAME));
  const dns = new DnsResponder(link);
  await dns.listen();
  const forwarder = new TcpForwarder(link, (address) => dns.names.get(address));
  await forwarder.listen(spec.ports);
  return {
    reset() {
      forwarder.resetAll();
      link.reset();
      dns.forget();
    },
  };
}
