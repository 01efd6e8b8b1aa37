import { createReadStream } from "node:fs";
import { randomBytes } from "node:crypto";
import { createServer, type Socket } from "node:net";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip, createGzip } from "node:zlib";
import { writeAtomically } from "../atomic-file.js";
import { SuspendError } from "../errors.js";
import { messageOf, whileAlive } from "./failure-report.js";
import { privatePages } from "./private-pages.js";
import type { QemuVm } from "./qemu-vm.js";
import { filterRamStream } from "./ram-diff-filter.js";

/**
 * Suspends a clone to `statePath`: stop, find the pages it changed, and migrate through a filter that
 * keeps only those (plus device state), gzip'd. The result resumes on the same template. The VM is
 * ended after; on failure it is let run again and the error rethrown, so nothing is lost.
 */
export async function suspendToFile(vm: QemuVm, statePath: string): Promise<{ bytes: number; pages: number }> {
  try {
    await vm.qmp.execute("stop");
    const dirty = await privatePages(vm.pid, vm.ramPath);
    const { result: stats, bytes } = await writeAtomically(statePath, (file) =>
      migrateOut(vm, "suspend", 120_000, async (stream) => {
        const gzip = createGzip({ level: 1 });
        const written = pipeline(gzip, file);
        const kept = await filterRamStream(stream, gzip, "mem", (offset) => dirty[offset / 4096] === 1);
        gzip.end();
        await written;
        return kept;
      }),
    );
    await vm.kill("suspended to disk");
    return { bytes, pages: stats.keptPages };
  } catch (err) {
    await vm.qmp.execute("cont").catch(() => undefined);
    throw new SuspendError(`suspend failed: ${messageOf(err)}`, { cause: err });
  }
}

/**
 * Streams saved device state (gzip'd for a suspended session) into QEMU's incoming-migration descriptor.
 *
 * QEMU closes its end as soon as it has loaded the state, which can be before this side has seen the
 * file's end: that takes one more read on libuv's pool, and a busy event loop (spawns and template
 * hashing at gateway start) delays it past a load that takes a few milliseconds. So QEMU's end
 * closing, or failing, only stops the feed: `stream.pipeline` would call it a premature close, and killing
 * QEMU for that killed clones that had loaded fine. Whether the load worked is for `migrate-incoming`,
 * `query-status` and QEMU's exit to say. A source that cannot be read does fail (`onSourceError`) at
 * once, since QEMU would otherwise wait for the rest of the stream until the resume deadline.
 */
export function feedState(into: Socket, path: string, gzipped: boolean, onSourceError: (err: Error) => void): void {
  if (into.destroyed) return; // QEMU is gone already: the resume's next step says so
  let stopped = false;
  const failed = (err: Error) => {
    if (stopped) return;
    stopped = true;
    onSourceError(err);
  };
  const file = createReadStream(path).on("error", failed);
  const source: Readable = gzipped ? file.pipe(createGunzip()).on("error", failed) : file;
  into.once("close", () => {
    stopped = true;
    file.destroy();
    source.destroy();
  });
  // Errors on `into` (EPIPE, ECONNRESET once QEMU closed its end) are handled by VmmProcess.
  source.pipe(into);
}

/**
 * Migrates a stopped VM out into `consume`. QEMU 7.2 can only migrate out to a socket it connects to
 * (`exec:` needs fork, which its seccomp filter forbids; `fd:` needs a descriptor passed over QMP, which
 * node cannot send), so the gateway listens on an unguessable name in the run root, which only root and
 * the VMM group may enter (vmm-user.ts), and takes the first connection only.
 */
export async function migrateOut<T>(vm: QemuVm, what: string, timeoutMs: number, consume: (stream: Socket) => Promise<T>): Promise<T> {
  const path = join(vm.process.runRoot, `${vm.id}-${randomBytes(16).toString("hex")}.sock`);
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.listen({ path, writableAll: true }, resolve).once("error", reject));
  try {
    const consumed = new Promise<T>((resolve, reject) => {
      server.once("connection", (stream) => {
        server.close();
        consume(stream).then(resolve, reject);
      });
    });
    consumed.catch(() => undefined); // awaited below; a failed migration may make it fail first
    await vm.qmp.execute("migrate-set-parameters", { "max-bandwidth": 64 * 1024 * 1024 * 1024 });
    await vm.qmp.execute("migrate", { uri: `unix:${path}` });
    await whileAlive(vm.process, vm.qmp.waitForMigration(timeoutMs), what);
    return await consumed;
  } finally {
    server.close();
  }
}
