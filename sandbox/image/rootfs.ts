/**
 * The base root filesystem every guest shares: busybox (also the user-visible shell and tools), node
 * and its libraries, the agent bundle, the resume helper and the stage 2 init. Read-only ext4 labelled
 * mcpv-base; the per-server layer is mounted over /srv.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { bundleAgent } from "./bundle.js";
import { type Busybox, installBusybox } from "./busybox.js";
import { type BuildContext } from "./context.js";
import { debianFiles, installDebianFiles, installedVersions } from "./debian-files.js";
import { byteCompile, PYTHON } from "./python.js";
import { makeExt4 } from "./ext4.js";
import { CA_BUNDLE_FILE } from "./layer.js";
import { hasCommand } from "./exec.js";
import { elapsed, exists, formatBytes, hashFile, hashOf, IMAGE_BUILD_VERSION, publishAtomically, sha256 } from "./hash.js";
import { hostNodeRuntime, installNodeRuntime } from "./node-runtime.js";
import { ensureResumeHelper } from "./resume-helper.js";

export const BASE_LABEL = "mcpv-base";
export const GUEST_HOSTNAME = "mcpvisor";

export interface Rootfs {
  path: string;
  hash: string;
}

const ETC_FILES: Record<string, string> = {
  passwd: "root:x:0:0:root:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
  group: "root:x:0:\nnogroup:x:65534:\n",
  hostname: `${GUEST_HOSTNAME}\n`,
  hosts: `127.0.0.1\tlocalhost ${GUEST_HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n`,
  "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
  // The guest agent answers DNS here when the server has egress (sandbox/agent/egress/dns-responder.ts);
  // without egress nothing listens and a lookup fails at once.
  "resolv.conf": "nameserver 127.0.0.53\noptions timeout:2 attempts:2\n",
};

/** The system CA store: the server layer's bundle (Mozilla's roots plus this installation's egress CA). */
const SYSTEM_CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt";


/**
 * The base root filesystem, plus the files of `packages` (Debian packages of the host, see
 * debian-files.ts) for the servers that need them: CPython and git for Python servers.
 */
export async function ensureRootfs(ctx: BuildContext, busybox: Busybox, packages: readonly string[] = []): Promise<Rootfs> {
  const stage2 = path.join(ctx.repoRoot, "sandbox", "image", "guest", "stage2");
  const [agent, helper, node, stage2Hash, strip] = await Promise.all([
    bundleAgent(ctx.repoRoot),
    ensureResumeHelper(ctx),
    hostNodeRuntime(),
    hashFile(stage2),
    hasCommand("strip"),
  ]);
  // Versions name the packages' content; listing their files (and ldd over each) is for a build only.
  const versions = packages.length ? await installedVersions(packages) : undefined;
  const hash = hashOf({
    v: IMAGE_BUILD_VERSION,
    busybox: busybox.sha256,
    node: node.sha256,
    libs: node.libraries.map((l) => [l.guestPath, l.sha256]),
    strip,
    agent: sha256(agent),
    helper: helper.hash,
    stage2: stage2Hash,
    etc: ETC_FILES,
    caBundle: CA_BUNDLE_FILE,
    debian: versions,
    bytecode: versions ? 1 : undefined,
  });
  const out = path.join(ctx.cacheDir, "images", `base-${hash}.ext4`);
  if (exists(out)) return { path: out, hash };

  const started = Date.now();
  const extra = versions ? `, ${Object.entries(versions).map(([p, v]) => `${p} ${v}`).join(", ")}` : "";
  ctx.progress(`base rootfs: building (node ${node.version}, agent ${formatBytes(agent.length)}${extra})`);
  let size = 0;
  await publishAtomically(out, async (tmp) => {
    const root = `${tmp}.root`;
    try {
      await stageRootfs(root, { busybox, agent, helperPath: helper.path, stage2, node, strip });
      if (versions) {
        await installDebianFiles(await debianFiles(packages), root);
        if (fs.existsSync(path.join(root, PYTHON.slice(1)))) await byteCompile(root);
      }
      size = (await makeExt4(root, tmp, BASE_LABEL)).bytes;
    } finally {
      await fs.promises.rm(root, { recursive: true, force: true });
    }
  });
  ctx.progress(`base rootfs: ${formatBytes(size)}, built in ${elapsed(started)}`);
  return { path: out, hash };
}

interface RootfsInputs {
  busybox: Busybox;
  agent: Buffer;
  helperPath: string;
  stage2: string;
  node: Awaited<ReturnType<typeof hostNodeRuntime>>;
  strip: boolean;
}

async function stageRootfs(root: string, inp: RootfsInputs): Promise<void> {
  const mk = (rel: string, mode = 0o755) => fs.promises.mkdir(path.join(root, rel), { recursive: true, mode });
  // Mount points (tmpfs, proc, the layer) and the usual skeleton.
  for (const d of ["srv", "workspace", "proc", "sys", "dev", "run", "etc", "usr/bin", "usr/local/bin", "opt/mcpvisor", "usr/libexec/mcpvisor", "var"]) {
    await mk(d);
  }
  await mk("tmp", 0o1777);
  await fs.promises.chmod(path.join(root, "tmp"), 0o1777);
  // The root image is read-only: everything that wants to write somewhere standard lands in /tmp.
  await fs.promises.symlink("../tmp", path.join(root, "var", "tmp"));
  await fs.promises.symlink("bin", path.join(root, "sbin"));

  // Applets go to /bin; node lives in /usr/bin and must not be shadowed.
  await installBusybox(inp.busybox, root);
  await fs.promises.symlink("/bin/busybox", path.join(root, "usr", "bin", "env")); // for #!/usr/bin/env shebangs
  await installNodeRuntime(inp.node, root, inp.strip);

  await fs.promises.writeFile(path.join(root, "opt", "mcpvisor", "agent.mjs"), inp.agent, { mode: 0o644 });
  await fs.promises.copyFile(inp.helperPath, path.join(root, "usr", "libexec", "mcpvisor", "resume-helper"));
  await fs.promises.chmod(path.join(root, "usr", "libexec", "mcpvisor", "resume-helper"), 0o755);
  await fs.promises.copyFile(inp.stage2, path.join(root, "usr", "libexec", "mcpvisor", "stage2"));
  await fs.promises.chmod(path.join(root, "usr", "libexec", "mcpvisor", "stage2"), 0o755);
  await mk("etc/ssl/certs");
  await fs.promises.symlink(CA_BUNDLE_FILE, path.join(root, SYSTEM_CA_BUNDLE));
  for (const [name, content] of Object.entries(ETC_FILES)) {
    await fs.promises.writeFile(path.join(root, "etc", name), content, { mode: 0o644 });
  }
}
