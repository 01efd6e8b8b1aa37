/** Keeps the first `limit` bytes of a stream and drops the rest, so the producer is never blocked on a full pipe. */
export class CappedOutput {
  readonly #limit: number;
  readonly #chunks: Buffer[] = [];
  #kept = 0;
  #truncated = false;

  constructor(limit: number) {
    this.#limit = limit;
  }

  push(chunk: Buffer): void {
    const room = this.#limit - this.#kept;
    if (chunk.length > room) this.#truncated = true;
    if (room <= 0) return;
    const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
    this.#chunks.push(part);
    this.#kept += part.length;
  }

  get truncated(): boolean {
    return this.#truncated;
  }

  /** A cut may split a multi-byte character; the decoder turns that tail into U+FFFD. */
  text(): string {
    return Buffer.concat(this.#chunks).toString("utf8");
  }
}
