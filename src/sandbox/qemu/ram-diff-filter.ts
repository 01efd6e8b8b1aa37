import type { Readable, Writable } from "node:stream";
import { ByteReader } from "./byte-reader.js";

/*
 * QEMU's migration stream (format version 3, as QEMU 7.2 writes it), the parts this filter reads:
 *   be32 magic "QEVM", be32 version 3
 *   0x07 configuration: be32 len + machine name, then subsections (0x05, u8 len + name, be32 version,
 *        ...); "configuration/capabilities" holds be32 count + count x (u8 len + name)
 *   0x01 section start: be32 id, u8 len + idstr, be32 instance, be32 version, then for "ram":
 *        be64 total|MEM_SIZE, per block (u8 len + name, be64 length[, be64 addr with x-ignore-shared]),
 *        be64 EOS, footer (0x7e, be32 id)
 *   0x02 section part / 0x03 section end: be32 id, page records until be64 EOS, footer
 *        page record: be64 offset|flags, [u8 len + block name unless CONTINUE], then 4096 bytes
 *        (PAGE) or one fill byte (ZERO)
 *   0x04 section full: device state; from the first one on, everything is copied unchanged.
 */
const MAGIC = 0x5145564d;
const SECTION_START = 0x01;
const SECTION_PART = 0x02;
const SECTION_END = 0x03;
const SECTION_FULL = 0x04;
const SUBSECTION = 0x05;
const CONFIGURATION = 0x07;
const FOOTER = 0x7e;

const FLAG_ZERO = 0x02;
const FLAG_MEM_SIZE = 0x04n;
const FLAG_PAGE = 0x08;
const FLAG_EOS = 0x10;
const FLAG_CONTINUE = 0x20;
const FLAG_MASK = 0xfff;
const PAGE_SIZE = 4096;
const OUTPUT_BATCH = 256 * 1024;

export interface DiffStats {
  keptPages: number;
  droppedPages: number;
  bytesOut: number;
}

export class UnsupportedStreamError extends Error {
  readonly code = "UNSUPPORTED_STREAM";
}

/**
 * Copies a migration stream, leaving out the RAM pages of block `block` that `keep(offset)` rejects:
 * pages the clone never changed, which are identical in the template it will be resumed on. The
 * result loads into a VMM whose guest RAM maps the template copy-on-write.
 */
export async function filterRamStream(
  input: Readable,
  output: Writable,
  block: string,
  keep: (offset: number) => boolean,
): Promise<DiffStats> {
  const reader = new ByteReader(input);
  const stats: DiffStats = { keptPages: 0, droppedPages: 0, bytesOut: 0 };
  // Kept records go out in batches: one write per record made gzip run once per page, and that cost
  // more CPU than parsing the whole stream.
  let batch: Buffer[] = [];
  let batched = 0;
  const flush = async (): Promise<void> => {
    if (batched === 0) return;
    const buf = Buffer.concat(batch, batched);
    batch = [];
    batched = 0;
    if (!output.write(buf)) await new Promise<void>((resolve) => output.once("drain", resolve));
  };
  const add = (buf: Buffer): void => {
    stats.bytesOut += buf.length;
    batch.push(buf);
    batched += buf.length;
  };
  const write = async (buf: Buffer): Promise<void> => {
    add(buf);
    if (batched >= OUTPUT_BATCH) await flush();
  };
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  const u64 = (n: bigint) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(n);
    return b;
  };
  const name = async (): Promise<Buffer> => {
    const len = await reader.u8();
    return Buffer.concat([Buffer.from([len]), await reader.read(len)]);
  };

  const header = await reader.read(8);
  if (header.readUInt32BE(0) !== MAGIC || header.readUInt32BE(4) !== 3) throw new UnsupportedStreamError("not a version 3 QEMU migration stream");
  await write(header);

  let ramSection = -1;
  let ignoreShared = false;
  /** The block of the last record: QEMU's CONTINUE flag refers to it across sections. */
  let current = "";
  let type = await reader.u8();
  if (type === CONFIGURATION) {
    const len = await reader.u32();
    await write(Buffer.concat([Buffer.from([type]), u32(len), await reader.read(len)]));
    for (type = await reader.u8(); type === SUBSECTION; type = await reader.u8()) {
      const sub = await name();
      await write(Buffer.concat([Buffer.from([type]), sub, await reader.read(4)]));
      if (sub.subarray(1).toString() !== "configuration/capabilities") {
        throw new UnsupportedStreamError(`unknown configuration subsection ${sub.subarray(1)}`);
      }
      const count = await reader.u32();
      await write(u32(count));
      for (let i = 0; i < count; i++) {
        const cap = await name();
        if (cap.subarray(1).toString() === "x-ignore-shared") ignoreShared = true;
        await write(cap);
      }
    }
  }
  while (!(await handleSection(type))) type = await reader.u8();
  for await (const chunk of reader.rest()) await write(chunk);
  await flush();
  return stats;

  /** Handles one section; true at the first device section (from there on, everything is copied). */
  async function handleSection(type: number): Promise<boolean> {
    if (type === SECTION_FULL) {
      await write(Buffer.from([type]));
      return true;
    }
    if (type === SECTION_START) {
      const id = await reader.u32();
      const idstr = await name();
      const rest = await reader.read(8);
      await write(Buffer.concat([Buffer.from([type]), u32(id), idstr, rest]));
      if (idstr.subarray(1).toString() !== "ram") throw new UnsupportedStreamError(`unexpected iterative section ${idstr.subarray(1)}`);
      ramSection = id;
      const totalWord = await reader.u64();
      if (!(totalWord & FLAG_MEM_SIZE)) throw new UnsupportedStreamError("ram setup without MEM_SIZE");
      await write(u64(totalWord));
      let remaining = totalWord & ~BigInt(FLAG_MASK);
      while (remaining > 0n) {
        const blockName = await name();
        const length = await reader.u64();
        await write(Buffer.concat([blockName, u64(length)]));
        if (ignoreShared) await write(await reader.read(8));
        remaining -= length;
      }
      await copyRecords(false);
      return false;
    }
    if (type === SECTION_PART || type === SECTION_END) {
      const id = await reader.u32();
      if (id !== ramSection) throw new UnsupportedStreamError(`iterative section ${id} is not ram`);
      await write(Buffer.concat([Buffer.from([type]), u32(id)]));
      await copyRecords(true);
      return false;
    }
    throw new UnsupportedStreamError(`unexpected section type 0x${type.toString(16)}`);
  }

  /**
   * Page records up to EOS and the section footer; pages of `block` that need no saving are dropped.
   * The loop stays synchronous while the reader has the bytes (`take`), and reads the record word as
   * two 32-bit halves: tens of thousands of records go by per suspend.
   */
  async function copyRecords(pages: boolean): Promise<void> {
    for (;;) {
      const head = reader.take(8) ?? (await reader.read(8));
      const high = head.readUInt32BE(0);
      const low = head.readUInt32BE(4);
      const flags = low & FLAG_MASK;
      if (flags & FLAG_EOS) {
        await write(Buffer.from(head));
        break;
      }
      if (!pages) throw new UnsupportedStreamError("page record in ram setup");
      let blockName: Buffer | undefined;
      if (!(flags & FLAG_CONTINUE)) {
        blockName = await name();
        current = blockName.subarray(1).toString();
      }
      let size: number;
      if (flags & FLAG_PAGE) size = PAGE_SIZE;
      else if (flags & FLAG_ZERO) size = 1;
      else throw new UnsupportedStreamError(`unsupported page flags 0x${flags.toString(16)}`);
      const payload = reader.take(size) ?? (await reader.read(size));
      const offset = high * 2 ** 32 + (low - flags);
      if (current === block && !keep(offset)) {
        stats.droppedPages++;
        continue;
      }
      stats.keptPages++;
      // Every kept record names its block: the record that named it may have been dropped.
      const word = Buffer.from(head);
      word.writeUInt32BE((low & ~FLAG_CONTINUE) >>> 0, 4);
      const nameBytes = blockName ?? Buffer.concat([Buffer.from([current.length]), Buffer.from(current)]);
      add(word);
      add(nameBytes);
      add(payload);
      if (batched >= OUTPUT_BATCH) await flush();
    }
    const footer = await reader.read(5);
    if (footer[0] !== FOOTER) throw new UnsupportedStreamError("missing section footer");
    await write(Buffer.from(footer));
  }
}
