import { startGateway } from "../main.js";
import { configFrom, configOptions, loggerFor, parse, progressPrinter } from "./common.js";

export const START_USAGE = `mcpvisor start [--host H] [--port P] [--servers a,b] [--accel auto|kvm|tcg] [--cache-dir D]
               [--tenants-file F] [--oauth-issuer URL] [--public-url URL] [--audit-log F] [--insecure-no-auth] ...
  Serves each hosted server at http://HOST:PORT/servers/<name>/mcp (Streamable HTTP),
  with GET /healthz and GET /readyz. Builds whatever is missing first, showing progress.
  Any host but loopback needs --tenants-file (API keys) or --oauth-issuer (OAuth access tokens).
  Every setting in the README's "Options" has a flag, e.g. --max-body-bytes N, and an MCPVISOR_* variable.`;

export async function startCommand(argv: string[]): Promise<void> {
  const { values } = parse(argv, { ...configOptions(), help: { type: "boolean", short: "h" } });
  if (values.help) return void console.log(START_USAGE);
  const config = configFrom(values);
  const log = loggerFor(config);
  const progress = progressPrinter();
  const gateway = await startGateway(config, log, progress);
  const base = `http://${config.host}:${gateway.port}`;
  progress(`listening on ${base}; readiness at ${base}/readyz`);
  for (const m of gateway.manifests) progress(`  ${m.name}: ${base}/servers/${m.name}/mcp`);
  void gateway.settled.then(() => {
    const report = gateway.readiness.report();
    progress(report.ready ? "ready: every template is built and every pool is filled" : `not ready: ${report.reasons.join("; ")}`);
  });
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    // Readiness fails first, so load balancers send nothing new; then sessions' sandboxes are saved, so
    // clients carry on after a restart or, in a cluster, on another node. drainTimeoutMs (20 s by default)
    // leaves room under systemd's and Kubernetes' usual 30 s stop timeouts.
    gateway.readiness.drain();
    progress(`${signal}: draining: saving sessions${gateway.cluster ? " to the cluster's store" : " to disk"}, then shutting down`);
    await gateway.router.suspendSessions(config.drainTimeoutMs);
    await gateway.close();
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}
