import { readFile, rename, writeFile } from "node:fs/promises";
import { generateKey } from "../auth/api-keys.js";
import { parseTenantsFile, type TenantsFile } from "../auth/tenants-file.js";
import { ConfigError } from "../config/gateway.js";
import { parse } from "./common.js";

export const KEYS_USAGE = `mcpvisor keys add --file F --tenant T --id NAME [--servers a,b] [--admin]
  Makes a new API key for tenant T (created if new, with its servers and admin flag), adds its
  SHA-256 to the tenants file F (created if missing) and prints the key once: it is not stored.`;

export async function keysCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, {
    file: { type: "string" },
    tenant: { type: "string" },
    id: { type: "string" },
    servers: { type: "string" },
    admin: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help || positionals[0] !== "add") return void console.log(KEYS_USAGE);
  const { file, tenant, id } = values;
  if (!file || !tenant || !id) throw new ConfigError("keys add needs --file, --tenant and --id");
  const text = await readFile(file, "utf8").catch((err: NodeJS.ErrnoException) => (err.code === "ENOENT" ? "{}" : Promise.reject(err)));
  const tenants: TenantsFile = parseTenantsFile(file, text);
  tenants.tenants[tenant] ??= {
    admin: values.admin ?? false,
    limits: {},
    ...(values.servers ? { servers: values.servers.split(",").filter(Boolean) } : {}),
  };
  const { key, sha256 } = generateKey();
  tenants.keys.push({ id, tenant, sha256 });
  // Validated again as a whole (a duplicate id is refused), then written atomically, readable by the owner only.
  const next = JSON.stringify(parseTenantsFile(file, JSON.stringify(tenants)), null, 2);
  await writeFile(`${file}.tmp`, `${next}\n`, { mode: 0o600 });
  await rename(`${file}.tmp`, file);
  console.error(`added key '${id}' for tenant '${tenant}' to ${file}; the key (shown once):`);
  console.log(key);
}
