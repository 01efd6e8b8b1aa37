/**
 * Egress for the whole gateway: one policy per server with `network`, this installation's CA, the
 * connection budget shared by every sandbox, and the link each VM's egress port is attached to
 * (docs/design/egress.md).
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import { ConfigError } from "../config/gateway.js";
import type { NetworkGrant, ServerManifest } from "../config/manifest.js";
import type { EgressAttachment, EgressHost } from "../sandbox/driver.js";
import { registerSecret } from "../telemetry/log.js";
import { hostAddresses } from "./address-class.js";
import { CertificateAuthority, egressCaDir } from "./certificate-authority.js";
import { MissingSecretError, resolveSecret } from "./credentials.js";
import { parseDestination } from "./destination.js";
import { hostResolver } from "./host-resolver.js";
import { ConnectionBudget } from "./limits.js";
import { EgressPolicy, type Credential } from "./policy.js";
import { VmEgressLink } from "./vm-link.js";

export interface EgressOptions {
  manifests: readonly ServerManifest[];
  /** Where the manifests are, to name the file of a credential that cannot be resolved. */
  serversDir: string;
  env: NodeJS.ProcessEnv;
  cacheDir: string;
  /** DNS servers (`ip` or `ip:port`) names are resolved with; empty: the system resolver. */
  resolver: string[];
  /** A PEM file of CAs trusted for upstream TLS besides the system store. */
  upstreamCaFile?: string;
  /** Egress connections open at once across every sandbox. */
  maxConnections: number;
  /** The gateway's own ports; the set is read at each decision, so a port bound later can be added. */
  gatewayPorts: Set<number>;
  log: Logger;
}

interface ServerEgress {
  policy: EgressPolicy;
  limits: NetworkGrant["limits"];
}

export class Egress implements EgressHost {
  private constructor(
    private readonly servers: Map<string, ServerEgress>,
    private readonly ca: CertificateAuthority | undefined,
    private readonly budget: ConnectionBudget,
    private readonly upstreamCa: string | undefined,
    private readonly log: Logger,
  ) {}

  /** Resolves every credential first: a missing secret stops the start, naming the file and field. */
  static async create(options: EgressOptions): Promise<Egress> {
    const networked = options.manifests.filter((m): m is ServerManifest & { network: NetworkGrant } => m.network !== false);
    const facts = { resolve: hostResolver(options.resolver), gatewayPorts: options.gatewayPorts, hostAddresses: hostAddresses() };
    const servers = new Map<string, ServerEgress>();
    for (const manifest of networked) {
      const credentials = new Map<string, Credential>();
      manifest.network.credentials.forEach((credential, i) => {
        const field = `${join(options.serversDir, `${manifest.name}.json`)}: network.credentials[${i}].value`;
        let value: string;
        try {
          value = resolveSecret(credential.value, options.env);
        } catch (err) {
          if (err instanceof MissingSecretError) throw new ConfigError(`${field}: ${err.message}`);
          throw err;
        }
        if (/[\r\n]/.test(value)) throw new ConfigError(`${field}: the secret contains a line break, which cannot go into an HTTP header`);
        registerSecret(value);
        credentials.set(parseDestination(credential.destination).label, { header: credential.header, value });
      });
      servers.set(manifest.name, { policy: new EgressPolicy(manifest.network, credentials, facts), limits: manifest.network.limits });
    }
    const needsCa = networked.some((m) => m.network.credentials.length > 0);
    const ca = needsCa ? await CertificateAuthority.loadOrCreate(egressCaDir(options.cacheDir)) : undefined;
    let upstreamCa: string | undefined;
    if (options.upstreamCaFile) {
      try {
        upstreamCa = await readFile(options.upstreamCaFile, "utf8");
      } catch (err) {
        throw new ConfigError(`egressUpstreamCa: cannot read ${options.upstreamCaFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
    return new Egress(servers, ca, new ConnectionBudget(options.maxConnections), upstreamCa, options.log);
  }

  attach(server: string, port: Duplex, vm: string): EgressAttachment {
    const egress = this.servers.get(server);
    if (!egress) {
      // A VM whose spec names a server without a policy: nothing it sends is served.
      port.destroy();
      return { noteCall: () => undefined, openConnections: () => 0, close: () => undefined };
    }
    const ca = this.ca;
    return new VmEgressLink(port, {
      server,
      vm,
      policy: egress.policy,
      limits: egress.limits,
      budget: this.budget,
      upstream: this.upstreamCa ? { extraCa: this.upstreamCa } : {},
      leafFor: (name) => (ca ? ca.leafFor(name) : Promise.reject(new Error("no egress CA"))),
      log: this.log,
    });
  }

  /** Egress connections open now across every sandbox. */
  get openConnections(): number {
    return this.budget.used;
  }
}
