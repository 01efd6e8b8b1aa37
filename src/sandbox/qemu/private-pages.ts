import { open, readFile } from "node:fs/promises";

const PAGE = 4096;
const PRESENT = 1n << 63n;
const FILE_PAGE = 1n << 61n;

/**
 * The guest-RAM pages a clone has written: in its copy-on-write mapping of the template RAM file, a page
 * present in memory and not backed by the file is a private copy (/proc/<pid>/pagemap, bits 63 and 61).
 * Every other page still equals the template's. The VM must be stopped while this is read.
 */
export async function privatePages(pid: number, ramPath: string): Promise<Uint8Array> {
  const maps = await readFile(`/proc/${pid}/maps`, "utf8");
  const line = maps.split("\n").find((l) => l.endsWith(ramPath));
  if (!line) throw new Error(`no mapping of ${ramPath} in process ${pid}`);
  const [start, end] = line.split(" ")[0]!.split("-").map((hex) => BigInt(`0x${hex}`)) as [bigint, bigint];
  const pages = Number((end - start) / BigInt(PAGE));
  const entries = Buffer.alloc(pages * 8);
  const fh = await open(`/proc/${pid}/pagemap`, "r");
  try {
    await fh.read(entries, 0, entries.length, Number(start / BigInt(PAGE)) * 8);
  } finally {
    await fh.close();
  }
  const dirty = new Uint8Array(pages);
  for (let i = 0; i < pages; i++) {
    const entry = entries.readBigUInt64LE(i * 8);
    if (entry & PRESENT && !(entry & FILE_PAGE)) dirty[i] = 1;
  }
  return dirty;
}
