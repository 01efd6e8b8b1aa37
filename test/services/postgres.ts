import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { access, appendFile, chown, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { basename, dirname, join } from "node:path";
import { promisify } from "node:util";
import { aptGet } from "./debian-package.js";

const execFileAsync = promisify(execFile);

const PG_LIB = "/usr/lib/postgresql";
const HOST = "127.0.0.1";
/** Fixed, so every test file and every run finds the one shared server; off 5432 to miss a system cluster. */
const PORT = 55432;
const USER = "mcpvisor_test";
const PASSWORD = "mcpvisor-test-pw";
const DATABASE = "mcpvisor_test";

export interface Postgres {
  port: number;
  host: "127.0.0.1";
  user: string;
  password: string;
  database: string;
  /** A postgres:// URL; `hostOverride` for clients that reach the server by another address. */
  url(hostOverride?: string): string;
  /** Runs SQL through psql (stops at the first error) and returns its stdout: tuples only, unaligned, without the last newline. */
  query(sql: string): Promise<string>;
}

/**
 * A real PostgreSQL from Debian's packages, installed, initialized and started on first use and shared
 * afterwards: the server is left running (detached) for the next test file and the next run. Safe to
 * call from concurrent test processes: the cluster is created in a temporary directory and renamed into
 * place, and a lost race to start it is noticed and waited out.
 */
export async function startPostgres(): Promise<Postgres> {
  const bin = await ensureInstalled();
  const postgres = handle(bin);
  if (await postgres.query("select 1").then(() => true, () => false)) return postgres;
  if (process.getuid?.() !== 0) {
    throw new Error(`no test PostgreSQL answers on ${HOST}:${PORT}, and starting one needs root (it runs as user postgres through runuser); run the tests as root once`);
  }
  const dataDir = await clusterDir(bin);
  await initCluster(bin, dataDir);
  await startCluster(bin, dataDir);
  await createDatabase(bin);
  await postgres.query("select 1");
  return postgres;
}

function handle(bin: string): Postgres {
  return {
    port: PORT,
    host: HOST,
    user: USER,
    password: PASSWORD,
    database: DATABASE,
    url: (hostOverride = HOST) => {
      const host = hostOverride.includes(":") ? `[${hostOverride}]` : hostOverride;
      return `postgres://${encodeURIComponent(USER)}:${encodeURIComponent(PASSWORD)}@${host}:${PORT}/${DATABASE}`;
    },
    query: (sql) => psql(bin, DATABASE, sql),
  };
}

async function psql(bin: string, database: string, sql: string): Promise<string> {
  const args = ["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", String(PORT), "-U", USER, "-d", database, "-c", sql];
  const stdout = await run(join(bin, "psql"), args, { ...process.env, PGPASSWORD: PASSWORD, PGCONNECT_TIMEOUT: "5" });
  return stdout.replace(/\n$/, "");
}

/** The newest installed server's bin directory, installing Debian's `postgresql` when there is none. */
async function ensureInstalled(): Promise<string> {
  const found = await installedBinDir();
  if (found) return found;
  progress("installing Debian's postgresql package (apt-get, once)");
  // Only refresh the package lists when installing from the current ones fails (a fresh image has none).
  if (!(await aptGet(["install", "-y", "--no-install-recommends", "postgresql"]))) {
    if (!(await aptGet(["update"])) || !(await aptGet(["install", "-y", "--no-install-recommends", "postgresql"]))) {
      throw new Error("apt-get could not install postgresql (output above); the test PostgreSQL needs Debian's package and root");
    }
  }
  const installed = await installedBinDir();
  if (!installed) throw new Error(`apt-get installed postgresql, yet there is no ${PG_LIB}/<major>/bin/postgres`);
  return installed;
}

async function installedBinDir(): Promise<string | undefined> {
  const majors = (await readdir(PG_LIB).catch(() => [])).filter((name) => /^\d+$/.test(name)).sort((a, b) => Number(b) - Number(a));
  for (const major of majors) {
    const bin = join(PG_LIB, major, "bin");
    if (await access(join(bin, "postgres"), constants.X_OK).then(() => true, () => false)) return bin;
  }
  return undefined;
}

/**
 * Where the cluster lives: `<test cache>/postgres-<major>` when user postgres can reach it. Root's home
 * is 0700 on Debian, so root's default cache is out of its reach; then the cluster lives in postgres's
 * own home (Debian's place for clusters) rather than opening root's home to other users.
 */
async function clusterDir(bin: string): Promise<string> {
  const major = basename(dirname(bin));
  const cacheRoot = process.env.MCPVISOR_TEST_CACHE ?? join(homedir(), ".cache", "mcpvisor-test");
  await mkdir(cacheRoot, { recursive: true });
  if (await asPostgres(["test", "-x", cacheRoot]).then(() => true, () => false)) return join(cacheRoot, `postgres-${major}`);
  const home = (await postgresAccount()).home;
  return join(home, `mcpvisor-test-${major}`);
}

async function initCluster(bin: string, dataDir: string): Promise<void> {
  if (await access(join(dataDir, "PG_VERSION")).then(() => true, () => false)) return;
  progress(`creating a cluster in ${dataDir} (once)`);
  const { uid, gid } = await postgresAccount();
  const tmp = `${dataDir}.init-${process.pid}-${randomBytes(4).toString("hex")}`;
  const pwFile = `${tmp}.pw`;
  try {
    await mkdir(tmp, { mode: 0o700 });
    await chown(tmp, uid, gid);
    await writeFile(pwFile, PASSWORD, { mode: 0o600 });
    await chown(pwFile, uid, gid);
    // The test role is the bootstrap superuser, so no second role is needed.
    const initdb = [join(bin, "initdb"), "-D", tmp, "--auth-local=trust", "--auth-host=scram-sha-256", `--username=${USER}`, `--pwfile=${pwFile}`];
    await asPostgres([...initdb, "--no-locale", "--encoding=UTF8"]);
    const socketDir = dataDir.replaceAll("'", "''");
    await appendFile(
      join(tmp, "postgresql.conf"),
      `\n# mcpvisor tests: loopback only, a fixed port, the socket in the data directory rather than /var/run\nlisten_addresses = '${HOST}'\nport = ${PORT}\nunix_socket_directories = '${socketDir}'\n`,
    );
    await rename(tmp, dataDir).catch((err: NodeJS.ErrnoException) => {
      // A concurrent test process renamed its cluster into place first: use that one.
      if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
    });
  } finally {
    await rm(tmp, { recursive: true, force: true });
    await rm(pwFile, { force: true });
  }
}

async function startCluster(bin: string, dataDir: string): Promise<void> {
  const log = join(dataDir, "server.log");
  progress(`starting on ${HOST}:${PORT} (log: ${log})`);
  // pg_ctl puts the server in its own session, so it outlives this process and serves later test files.
  const started = await asPostgres([join(bin, "pg_ctl"), "-D", dataDir, "-l", log, "-w", "-t", "120", "start"]).then(() => true, () => false);
  if (started) return;
  // A concurrent test process may have started it first: pg_ctl then fails on the server's lock file.
  const running = await asPostgres([join(bin, "pg_ctl"), "-D", dataDir, "status"]).then(() => true, () => false);
  if (!running) {
    const tail = (await readFile(log, "utf8").catch(() => "")).split("\n").slice(-15).join("\n");
    throw new Error(`PostgreSQL did not start (is port ${PORT} taken?); the end of ${log}:\n${tail}`);
  }
  const deadline = Date.now() + 120_000;
  while (!(await run(join(bin, "pg_isready"), ["-q", "-h", HOST, "-p", String(PORT)]).then(() => true, () => false))) {
    if (Date.now() > deadline) throw new Error(`PostgreSQL in ${dataDir} runs but does not accept connections on ${HOST}:${PORT}; see ${log}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function createDatabase(bin: string): Promise<void> {
  const exists = async () => (await psql(bin, "postgres", `select 1 from pg_database where datname = '${DATABASE}'`)) === "1";
  if (await exists()) return;
  await psql(bin, "postgres", `create database ${DATABASE}`).catch(async (err: unknown) => {
    if (!(await exists())) throw err; // else a concurrent test process created it first
  });
}

let account: Promise<{ uid: number; gid: number; home: string }> | undefined;

function postgresAccount(): Promise<{ uid: number; gid: number; home: string }> {
  account ??= run("getent", ["passwd", "postgres"]).then(
    (line) => {
      const [, , uid, gid, , home] = line.trim().split(":");
      return { uid: Number(uid), gid: Number(gid), home: home! };
    },
    (err: unknown) => {
      throw new Error("there is no user postgres; Debian's postgresql package creates it (apt-get install postgresql)", { cause: err });
    },
  );
  return account;
}

/** PostgreSQL refuses to run as root, so its tools run as the package's `postgres` user. */
function asPostgres(argv: string[]): Promise<string> {
  return run("runuser", ["-u", "postgres", "--", ...argv]);
}

/** Runs a command from `/` (which user postgres can enter); rejects with its stderr in the message. */
async function run(file: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  try {
    return (await execFileAsync(file, args, { cwd: "/", env, encoding: "utf8" })).stdout;
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    const command = [file, ...args].join(" ").slice(0, 300);
    throw new Error(`${command} failed${stderr ? `: ${stderr}` : ""}`, { cause: err });
  }
}

function progress(line: string): void {
  process.stderr.write(`test postgres: ${line}\n`);
}
