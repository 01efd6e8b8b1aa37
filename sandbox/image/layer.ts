/**
 * One read-only ext4 image per sandbox unit (label mcpv-srv), mounted at /srv in the guest: each
 * server's code under /srv/<server>, plus /.mcpvisor/guest.json, the spec the guest agent spawns.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as tls from "node:tls";
import { type ServerManifest } from "../../src/config/manifest.js";
import type { SandboxUnit } from "../../src/config/sandbox-unit.js";
import { parseDestination } from "../../src/egress/destination.js";
import { CertificateAuthority, egressCaDir } from "../../src/egress/certificate-authority.js";
import { GUEST_PROXY_PORT } from "../agent/egress-protocol.js";
import type { GuestSpec, ServerSpec } from "../agent/hosted-server.js";
import { installedVersions } from "./debian-files.js";
import { bundleSharedLibraries, consoleScripts, pipInstall, PypiInstallError, PYTHON_LAYER_DIR, PYTHON_LAYER_LIBS } from "./python.js";
import { bundleEsm } from "./bundle.js";
import { type BuildContext } from "./context.js";
import { makeExt4 } from "./ext4.js";
import { run } from "./exec.js";
import { elapsed, exists, formatBytes, hashOf, IMAGE_BUILD_VERSION, publishAtomically, sha256 } from "./hash.js";

export const LAYER_LABEL = "mcpv-srv";
/** Where the layer is mounted in the guest; each server's files, and its working directory, are in /srv/<server>. */
export const GUEST_SERVER_DIR = "/srv";

export interface ServerLayer {
  hash: string;
  diskPath: string;
}

/** This installation's egress CA (the gateway signs with it) and the bundle a guest trusts: Mozilla's roots plus it. */
const EGRESS_CA_FILE = "/srv/.mcpvisor/egress-ca.pem";
export const CA_BUNDLE_FILE = "/srv/.mcpvisor/ca-bundle.pem";


/**
 * One server's entry in /srv/.mcpvisor/guest.json (sandbox/agent/hosted-server.ts). A server with
 * `network` also gets the proxy and CA settings common clients read (node, OpenSSL, Python's
 * requests); its manifest's own `env` wins over them.
 */
function serverSpec(manifest: ServerManifest): ServerSpec {
  const dir = `${GUEST_SERVER_DIR}/${manifest.name}`;
  const spec: ServerSpec = { name: manifest.name, command: manifest.command, args: manifest.args, env: manifest.env, cwd: dir };
  if (manifest.source.kind === "pypi") {
    // A console script by name runs from the layer's scripts; the layer is read-only, its bytecode prebuilt.
    const packages = `${dir}/${PYTHON_LAYER_DIR}`;
    if (!manifest.command.includes("/")) spec.command = `${packages}/bin/${manifest.command}`;
    spec.env = { PYTHONPATH: packages, PYTHONDONTWRITEBYTECODE: "1", PYTHONUNBUFFERED: "1", LD_LIBRARY_PATH: `${packages}/${PYTHON_LAYER_LIBS}`, ...manifest.env };
  }
  if (manifest.network === false) return spec;
  const proxy = `http://127.0.0.1:${GUEST_PROXY_PORT}`;
  const egressEnv = {
    HTTP_PROXY: proxy, HTTPS_PROXY: proxy, http_proxy: proxy, https_proxy: proxy, NO_PROXY: "localhost,127.0.0.1", no_proxy: "localhost,127.0.0.1",
    NODE_EXTRA_CA_CERTS: EGRESS_CA_FILE, SSL_CERT_FILE: CA_BUNDLE_FILE, REQUESTS_CA_BUNDLE: CA_BUNDLE_FILE,
  };
  return { ...spec, env: { ...egressEnv, ...spec.env } };
}

/** What the guest agent reads from /srv/.mcpvisor/guest.json: every server of the unit, and its egress ports. */
export function guestSpec(unit: SandboxUnit): GuestSpec {
  const spec: GuestSpec = { servers: unit.members.map(serverSpec) };
  if (!unit.networked) return spec;
  return { ...spec, egress: { ports: [...new Set(unit.networked.network.allow.map((d) => parseDestination(d).port))].sort((a, b) => a - b) } };
}

/** Builds (or finds) a unit's layer; a failure names the server, so one bad manifest is told apart. */
export async function buildServerLayer(ctx: BuildContext, unit: SandboxUnit): Promise<ServerLayer> {
  const caPem = unit.networked ? (await CertificateAuthority.loadOrCreate(egressCaDir(ctx.cacheDir))).certPem : undefined;
  const members = await Promise.all(unit.members.map((manifest) => named(manifest, () => memberInputs(ctx, manifest))));
  const hash = hashOf({ v: IMAGE_BUILD_VERSION, members: members.map((m) => m.hash), spec: guestSpec(unit), ca: caPem ? sha256(caPem) : undefined });
  const diskPath = path.join(ctx.cacheDir, "images", "layers", `${unit.name}-${hash}.ext4`);
  if (exists(diskPath)) return { hash, diskPath };

  const started = Date.now();
  let size = 0;
  await publishAtomically(diskPath, async (tmp) => {
    const root = `${tmp}.root`;
    try {
      await fs.promises.mkdir(path.join(root, ".mcpvisor"), { recursive: true });
      for (const member of members) await named(member.manifest, () => member.install(path.join(root, member.manifest.name)));
      await fs.promises.writeFile(path.join(root, ".mcpvisor", "guest.json"), JSON.stringify(guestSpec(unit), null, 2) + "\n");
      if (caPem) {
        await fs.promises.writeFile(path.join(root, EGRESS_CA_FILE.slice(GUEST_SERVER_DIR.length + 1)), caPem);
        await fs.promises.writeFile(path.join(root, CA_BUNDLE_FILE.slice(GUEST_SERVER_DIR.length + 1)), [...tls.rootCertificates, caPem].join("\n") + "\n");
      }
      size = (await makeExt4(root, tmp, LAYER_LABEL)).bytes;
    } finally {
      await fs.promises.rm(root, { recursive: true, force: true });
    }
  });
  ctx.progress(`layer ${unit.name}: ${unit.members.map((m) => describeSource(m.source)).join(", ")}, ${formatBytes(size)}, built in ${elapsed(started)}`);
  return { hash, diskPath };
}

async function named<T>(manifest: ServerManifest, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    throw new Error(`the layer of server '${manifest.name}' (${describeSource(manifest.source)}) failed to build: ${(err as Error).message}`, { cause: err });
  }
}

function describeSource(source: ServerManifest["source"]): string {
  return source.kind === "bundle" ? source.entry : `${source.kind} ${source.package}@${source.version}`;
}

/** A member's share of the layer: what its files depend on, and how to put them into its directory. */
async function memberInputs(ctx: BuildContext, manifest: ServerManifest): Promise<{ manifest: ServerManifest; hash: string; install: (dir: string) => Promise<void> }> {
  const source = manifest.source;
  // For a bundle the output is the input that matters (it changes with any imported file); for npm
  // the exact package@version (ranges are refused by the manifest schema) plus the node that installs it.
  const bundle = source.kind === "bundle" ? await bundleEsm(path.resolve(ctx.repoRoot, source.entry), { requireBanner: true }) : null;
  const hash = hashOf({
    source,
    bundle: bundle ? sha256(bundle) : undefined,
    node: source.kind === "npm" ? process.version : undefined,
    python: source.kind === "pypi" ? (await installedVersions(["python3.11"]))["python3.11"] : undefined,
  });
  const install = async (dir: string) => {
    await fs.promises.mkdir(dir, { recursive: true });
    if (source.kind === "npm") await npmInstall(ctx, dir, source.package, source.version);
    else if (source.kind === "pypi") await pypiInstall(ctx, dir, manifest.command, source);
    else await fs.promises.writeFile(path.join(dir, "server.mjs"), bundle!);
  };
  return { manifest, hash, install };
}

async function pypiInstall(ctx: BuildContext, root: string, command: string, source: Extract<ServerManifest["source"], { kind: "pypi" }>): Promise<void> {
  const target = await pipInstall(ctx, root, source.package, source.version, source.extras);
  const copied = await bundleSharedLibraries(target);
  if (copied.length) ctx.progress(`layer: libraries the packages need besides the Python image: ${copied.join(", ")}`);
  const scripts = consoleScripts(target);
  if (!command.includes("/") && !scripts.includes(command)) {
    throw new PypiInstallError(`${source.package}==${source.version} has no console script '${command}' (the manifest's command); it has: ${scripts.join(", ") || "none"}`);
  }
}

async function npmInstall(ctx: BuildContext, root: string, pkg: string, version: string): Promise<void> {
  ctx.progress(`layer: npm install ${pkg}@${version}`);
  // A package.json of its own keeps npm from walking up to a parent project (the cache may sit inside one).
  await fs.promises.writeFile(path.join(root, "package.json"), JSON.stringify({ name: "mcpvisor-layer", private: true }) + "\n");
  await run(
    "npm",
    ["install", "--prefix", root, "--omit=dev", "--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=error", `${pkg}@${version}`],
    { cwd: root, env: { ...process.env, npm_config_yes: "true" } },
  );
  if (!exists(path.join(root, "node_modules", ...pkg.split("/")))) {
    throw new Error(`layer: npm install ${pkg}@${version} did not produce node_modules/${pkg}`);
  }
}
