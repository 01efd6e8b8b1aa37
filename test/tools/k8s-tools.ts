import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { REPO_ROOT } from "../../src/main.js";

/**
 * The tools test/deploy.test.ts renders and validates the Kubernetes manifests with, installed on first
 * use from package registries only (no GitHub, no download of a prebuilt binary):
 *  - helm and kustomize: `go install` from the Go module proxy, into <cache>/tools/bin/<name>-<version>/;
 *  - the Kubernetes JSON schemas (strict: an unknown field is an error): the PyPI wheel of
 *    kubernetes-validate, fetched with `pip download` (hash-pinned in k8s-tools/requirements.txt), of which
 *    only the schemas of one Kubernetes version are unpacked, into <cache>/tools/kubernetes-json-schema/;
 *  - Ajv, YAML and the prometheus-operator models (for the ServiceMonitor, a CRD): `npm ci` in
 *    k8s-tools/, pinned by its lock file, apart from the project's dependencies.
 * <cache> is $MCPVISOR_CACHE_DIR, else the gateway's default ($XDG_CACHE_HOME or ~/.cache, + /mcpvisor).
 * Each step is skipped when its result is there, and writes it by renaming a finished temporary
 * folder, so an interrupted install is redone, never half-used. Needs Go >= 1.26, python3 with pip, npm.
 */

export const HELM = { module: "helm.sh/helm/v4/cmd/helm", version: "v4.3.2" };
export const KUSTOMIZE = { module: "sigs.k8s.io/kustomize/kustomize/v5", version: "v5.8.2" };
/** The Kubernetes version whose schemas the manifests are validated against. */
export const KUBERNETES_VERSION = "1.37.0";

const DIR = join(REPO_ROOT, "test", "tools", "k8s-tools");
const NPM_PINS = JSON.parse(readFileSync(join(DIR, "package.json"), "utf8")).dependencies as Record<string, string>;

export function toolsCacheDir(): string {
  const cache = process.env.MCPVISOR_CACHE_DIR || join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "mcpvisor");
  return join(cache, "tools");
}

function log(message: string): void {
  process.stderr.write(`[k8s-tools] ${message}\n`);
}

class ToolInstallError extends Error {
  constructor(what: string, why: string, output = "") {
    const tail = output.trim().split("\n").slice(-25).join("\n");
    super(`k8s-tools: could not install ${what}: ${why}${tail ? `\n${tail}` : ""}`);
  }
}

function run(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs: number }) {
  const result = spawnSync(command, args, { ...options, timeout: options.timeoutMs, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 << 20 });
  const output = `${result.stdout ?? ""}${result.stderr ?? ""}`;
  const failure = result.error
    ? `${command}: ${result.error.message}`
    : result.status !== 0
      ? `${command} ${args.join(" ")} exited with ${result.status ?? result.signal}`
      : undefined;
  return { ok: !failure, failure: failure ?? "", output, stdout: result.stdout ?? "" };
}

function findGo(): string {
  for (const candidate of [process.env.GO, "go", "/usr/local/go/bin/go"]) {
    if (candidate && run(candidate, ["version"], { timeoutMs: 30_000 }).ok) return candidate;
  }
  throw new ToolInstallError("helm and kustomize", "no Go toolchain found (GO, go on PATH, /usr/local/go/bin/go); they are built with go install from the Go module proxy");
}

/** `go install module@version` into its own folder of the cache; the path of the binary. */
function goInstall(name: string, tool: { module: string; version: string }): string {
  const dir = join(toolsCacheDir(), "bin", `${name}-${tool.version}`);
  const binary = join(dir, name);
  if (existsSync(binary)) return binary;
  const go = findGo();
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  log(`installing ${name} ${tool.version}: go install ${tool.module}@${tool.version} (about 2 minutes for helm on a cold Go build cache, seconds warm)`);
  const started = Date.now();
  const goflags = [...(process.env.GOFLAGS ?? "").split(/\s+/).filter((f) => f && !f.startsWith("-mod=")), "-mod=mod"].join(" ");
  const result = run(go, ["install", `${tool.module}@${tool.version}`], {
    env: { ...process.env, GOBIN: tmp, GOFLAGS: goflags, GOTOOLCHAIN: process.env.GOTOOLCHAIN || "local" },
    timeoutMs: 20 * 60_000,
  });
  if (!result.ok || !existsSync(join(tmp, name))) {
    rmSync(tmp, { recursive: true, force: true });
    throw new ToolInstallError(`${name} ${tool.version}`, `go install ${tool.module}@${tool.version} failed: ${result.failure || "no binary"}`, result.output);
  }
  mkdirSync(dir, { recursive: true });
  renameSync(join(tmp, name), binary);
  rmSync(tmp, { recursive: true, force: true });
  log(`${name} ${tool.version} installed in ${((Date.now() - started) / 1000).toFixed(0)} s: ${binary}`);
  return binary;
}

function findPython(): string {
  for (const candidate of [process.env.PYTHON, "python3", "python"]) {
    if (candidate && run(candidate, ["-m", "pip", "--version"], { timeoutMs: 60_000 }).ok) return candidate;
  }
  throw new ToolInstallError(`the Kubernetes ${KUBERNETES_VERSION} JSON schemas`, "no python3 with pip found (PYTHON, python3, python); the schemas come from the PyPI package kubernetes-validate");
}

/** The folder of the strict JSON schemas of KUBERNETES_VERSION (one file a kind, and _definitions.json). */
function kubernetesSchemas(): string {
  const folder = `v${KUBERNETES_VERSION}-local-strict`;
  const dir = join(toolsCacheDir(), "kubernetes-json-schema", folder);
  if (existsSync(join(dir, "_definitions.json"))) return dir;
  const python = findPython();
  const what = `the Kubernetes ${KUBERNETES_VERSION} JSON schemas`;
  log(`installing ${what}: pip download of kubernetes-validate (${join("test", "tools", "k8s-tools", "requirements.txt")}), unpacking ${folder}/`);
  const download = mkdtempSync(join(tmpdir(), "mcpvisor-k8s-schemas-"));
  const tmp = `${dir}.tmp-${process.pid}`;
  try {
    const pip = run(
      python,
      ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes", "--disable-pip-version-check", "-r", join(DIR, "requirements.txt"), "-d", download],
      { timeoutMs: 10 * 60_000 },
    );
    if (!pip.ok) throw new ToolInstallError(what, pip.failure, pip.output);
    const wheel = readdirSync(download).find((f) => f.endsWith(".whl"));
    if (!wheel) throw new ToolInstallError(what, "pip downloaded no wheel", pip.output);
    rmSync(tmp, { recursive: true, force: true });
    const unpack = run(
      python,
      [
        "-c",
        [
          "import os, sys, zipfile",
          "wheel, prefix, dest = sys.argv[1:]",
          "n = 0",
          "with zipfile.ZipFile(wheel) as z:",
          "    for name in z.namelist():",
          "        if name.startswith(prefix) and not name.endswith('/'):",
          "            target = os.path.join(dest, name[len(prefix):])",
          "            os.makedirs(os.path.dirname(target), exist_ok=True)",
          "            with open(target, 'wb') as f: f.write(z.read(name))",
          "            n += 1",
          "print(n)",
        ].join("\n"),
        join(download, wheel),
        `kubernetes_validate/kubernetes-json-schema/${folder}/`,
        tmp,
      ],
      { timeoutMs: 5 * 60_000 },
    );
    if (!unpack.ok || !existsSync(join(tmp, "_definitions.json"))) {
      throw new ToolInstallError(what, unpack.failure || `${wheel} has no ${folder}/_definitions.json`, unpack.output);
    }
    mkdirSync(join(dir, ".."), { recursive: true });
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
    log(`${unpack.stdout.trim()} schema files in ${dir}`);
    return dir;
  } finally {
    rmSync(download, { recursive: true, force: true });
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** `npm ci` in k8s-tools/ unless every pinned package is there at its version. */
function npmPackages(): void {
  const installed = Object.entries(NPM_PINS).every(([name, version]) => {
    const file = join(DIR, "node_modules", name, "package.json");
    return existsSync(file) && JSON.parse(readFileSync(file, "utf8")).version === version;
  });
  if (installed) return;
  log(`installing ${Object.keys(NPM_PINS).join(", ")}: npm ci in ${join("test", "tools", "k8s-tools")}`);
  const result = run("npm", ["ci", "--no-audit", "--no-fund"], { cwd: DIR, timeoutMs: 10 * 60_000 });
  if (!result.ok) throw new ToolInstallError(Object.keys(NPM_PINS).join(", "), result.failure, result.output);
}

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  [field: string]: any;
}

export interface K8sTools {
  helm: string;
  kustomize: string;
  schemas: string;
  /** `kustomize build DIR`, parsed. */
  kustomizeBuild(dir: string): K8sObject[];
  /** `helm template RELEASE CHART` with these `--set` values (and files of values), parsed. */
  helmTemplate(release: string, chart: string, options?: { set?: string[]; valuesFiles?: string[]; namespace?: string }): K8sObject[];
  /** Why an object is not valid (empty when it is): JSON schema errors, or that its kind has no schema. */
  validate(object: K8sObject): string[];
}

type ValidateFunction = ((data: unknown) => boolean) & { errors?: Array<{ instancePath: string; message?: string; params?: Record<string, unknown> }> | null };

let tools: Promise<K8sTools> | undefined;

/** Installs what is missing (printing what it does), then gives the tools. */
export function k8sTools(): Promise<K8sTools> {
  tools ??= load();
  return tools;
}

async function load(): Promise<K8sTools> {
  const started = Date.now();
  npmPackages();
  const schemas = kubernetesSchemas();
  const helm = goInstall("helm", HELM);
  const kustomize = goInstall("kustomize", KUSTOMIZE);
  const elapsed = Date.now() - started;
  if (elapsed > 1000) log(`ready in ${(elapsed / 1000).toFixed(1)} s`);

  const require = createRequire(join(DIR, "package.json"));
  const YAML = require("yaml") as { parseAllDocuments(text: string): Array<{ errors: Error[]; toJS(): unknown }> };
  const Ajv2020 = (require("ajv/dist/2020") as { default: new (options: object) => { addSchema(schema: object): void; compile(schema: object): ValidateFunction } }).default;
  // Formats (int32, int64, byte, ...) are OpenAPI's, not JSON Schema's: types, enums, required and
  // unknown fields (additionalProperties: false in the strict schemas) are what is checked.
  const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
  ajv.addSchema(JSON.parse(readFileSync(join(schemas, "_definitions.json"), "utf8")));
  const compiled = new Map<string, ValidateFunction>();
  const serviceMonitorModule = join(DIR, "node_modules", "@kubernetes-models", "prometheus-operator", "monitoring.coreos.com", "v1", "ServiceMonitor.js");
  const { ServiceMonitor } = (await import(pathToFileURL(serviceMonitorModule).href)) as { ServiceMonitor: new (data: object) => { validate(): void } };

  function parse(text: string, source: string): K8sObject[] {
    const objects: K8sObject[] = [];
    for (const doc of YAML.parseAllDocuments(text)) {
      if (doc.errors.length > 0) throw new Error(`${source}: ${doc.errors.map((e) => e.message).join("; ")}`);
      const value = doc.toJS();
      if (value !== null && value !== undefined) objects.push(value as K8sObject);
    }
    return objects;
  }

  function render(command: string, args: string[]): string {
    const result = run(command, args, { cwd: REPO_ROOT, timeoutMs: 120_000 });
    if (!result.ok) throw new Error(`${[command, ...args].join(" ")} failed: ${result.failure}\n${result.output}`);
    return result.stdout;
  }

  return {
    helm,
    kustomize,
    schemas,
    kustomizeBuild(dir) {
      return parse(render(kustomize, ["build", dir]), `kustomize build ${dir}`);
    },
    helmTemplate(release, chart, options = {}) {
      const args = ["template", release, chart, "--namespace", options.namespace ?? "default"];
      for (const file of options.valuesFiles ?? []) args.push("--values", file);
      for (const value of options.set ?? []) args.push("--set", value);
      return parse(render(helm, args), `helm ${args.join(" ")}`);
    },
    validate(object) {
      const where = `${object.kind ?? "?"} ${object.metadata?.name ?? "?"}`;
      if (object.apiVersion === "monitoring.coreos.com/v1" && object.kind === "ServiceMonitor") {
        try {
          new ServiceMonitor(object).validate();
          return [];
        } catch (error) {
          return [`${where}: ${(error as Error).message}`];
        }
      }
      const [group, version] = String(object.apiVersion).includes("/") ? String(object.apiVersion).split("/") : ["", String(object.apiVersion)];
      const file = `${String(object.kind).toLowerCase()}${group ? `-${group!.split(".")[0]}` : ""}-${version}.json`;
      let check = compiled.get(file);
      if (!check) {
        if (!existsSync(join(schemas, file))) return [`${where}: no schema for ${object.apiVersion} ${object.kind} in Kubernetes ${KUBERNETES_VERSION} (${file})`];
        check = ajv.compile(JSON.parse(readFileSync(join(schemas, file), "utf8")));
        compiled.set(file, check);
      }
      if (check(object)) return [];
      return (check.errors ?? []).map((e) => `${where}: ${e.instancePath || "/"} ${e.message ?? ""}${e.params?.additionalProperty ? ` (${String(e.params.additionalProperty)})` : ""}`);
    },
  };
}
