import type { Readable } from "node:stream";

/** Reads exact byte counts from a stream, for parsing a binary format as it arrives. */
export class ByteReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private readonly iterator: AsyncIterator<Buffer>;
  private ended = false;

  constructor(source: Readable) {
    this.iterator = source[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  private async fill(n: number): Promise<void> {
    while (this.buffered < n) {
      const { value, done } = await this.iterator.next();
      if (done) {
        this.ended = true;
        throw new Error(`stream ended: needed ${n} bytes, had ${this.buffered}`);
      }
      this.chunks.push(value);
      this.buffered += value.length;
    }
  }

  async read(n: number): Promise<Buffer> {
    await this.fill(n);
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.buffered = rest.length;
    return out;
  }

  async u8(): Promise<number> {
    return (await this.read(1))[0]!;
  }

  async u32(): Promise<number> {
    return (await this.read(4)).readUInt32BE(0);
  }

  async u64(): Promise<bigint> {
    return (await this.read(8)).readBigUInt64BE(0);
  }

  /** Everything not yet read: what is buffered, then the rest of the stream. */
  async *rest(): AsyncGenerator<Buffer> {
    for (const chunk of this.chunks) yield chunk;
    this.chunks = [];
    this.buffered = 0;
    if (this.ended) return;
    for (;;) {
      const { value, done } = await this.iterator.next();
      if (done) return;
      yield value;
    }
  }
}
