import type { Readable } from "node:stream";

/**
 * Reads exact byte counts from a stream, for parsing a binary format as it arrives. `take` answers at
 * once when the bytes are already buffered in one chunk (most reads): a suspend parses ~35,000 page
 * records, and an await per record cost more CPU than the rest of the suspend together.
 */
export class ByteReader {
  /** Buffered chunks; the first one is read from `pos` on. */
  private chunks: Buffer[] = [];
  private pos = 0;
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

  /** The next `n` bytes if they are buffered in one chunk (a view, no copy), else undefined and nothing consumed. */
  take(n: number): Buffer | undefined {
    const first = this.chunks[0];
    if (!first || first.length - this.pos < n) return undefined;
    const out = first.subarray(this.pos, this.pos + n);
    this.advance(first, n);
    return out;
  }

  async read(n: number): Promise<Buffer> {
    const ready = this.take(n);
    if (ready) return ready;
    await this.fill(n);
    const out = Buffer.allocUnsafe(n);
    for (let copied = 0; copied < n; ) {
      const first = this.chunks[0]!;
      const k = Math.min(n - copied, first.length - this.pos);
      first.copy(out, copied, this.pos, this.pos + k);
      copied += k;
      this.advance(first, k);
    }
    return out;
  }

  private advance(first: Buffer, n: number): void {
    this.pos += n;
    this.buffered -= n;
    if (this.pos === first.length) {
      this.chunks.shift();
      this.pos = 0;
    }
  }

  async u8(): Promise<number> {
    return (this.take(1) ?? (await this.read(1)))[0]!;
  }

  async u32(): Promise<number> {
    return (this.take(4) ?? (await this.read(4))).readUInt32BE(0);
  }

  async u64(): Promise<bigint> {
    return (this.take(8) ?? (await this.read(8))).readBigUInt64BE(0);
  }

  /** Everything not yet read: what is buffered, then the rest of the stream. */
  async *rest(): AsyncGenerator<Buffer> {
    const [first, ...others] = this.chunks;
    if (first) yield first.subarray(this.pos);
    for (const chunk of others) yield chunk;
    this.chunks = [];
    this.pos = 0;
    this.buffered = 0;
    if (this.ended) return;
    for (;;) {
      const { value, done } = await this.iterator.next();
      if (done) return;
      yield value;
    }
  }
}
