import { readdir, readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { ConfigError } from "./gateway.js";
import { parseJsonFile } from "./json-file.js";
import { ServerManifestSchema, type ServerManifest } from "./manifest.js";

/**
 * Reads and validates `<dir>/*.json`. Any invalid manifest stops the gateway: the error names the file
 * and every field that is wrong, because a half-loaded set of servers would change tool names later.
 */
export async function loadManifests(dir: string, only: string[] = []): Promise<ServerManifest[]> {
  let files: string[];
  try {
    files = (await readdir(dir)).filter((f) => f.endsWith(".json")).sort();
  } catch (err) {
    throw new ConfigError(`cannot read the servers directory ${dir}: ${(err as Error).message}`);
  }
  const manifests: ServerManifest[] = [];
  for (const file of files) {
    const path = join(dir, file);
    manifests.push(parseManifest(path, await readFile(path, "utf8")));
  }
  const unknown = only.filter((name) => !manifests.some((m) => m.name === name));
  if (unknown.length) {
    throw new ConfigError(`no manifest for server(s) ${unknown.join(", ")} in ${dir} (have: ${manifests.map((m) => m.name).join(", ")})`);
  }
  return only.length ? manifests.filter((m) => only.includes(m.name)) : manifests;
}

export function parseManifest(path: string, text: string): ServerManifest {
  const manifest = parseJsonFile(ServerManifestSchema, path, text, "server manifest");
  if (manifest.name !== basename(path, ".json")) {
    throw new ConfigError(`${path}: name: '${manifest.name}' must match the file name '${basename(path, ".json")}'`);
  }
  return manifest;
}
