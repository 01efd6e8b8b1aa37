/** Binary payloads for image, audio and blob content. They are generated or inlined, never read from disk,
 * so the bundled server.mjs is the only file the guest needs. */

/** A 1x1 red pixel PNG (69 bytes, RGB, valid CRCs): the smallest image any client can decode. */
export const RED_PIXEL_PNG_BASE64 =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";

/** 10 ms of silence as 8 kHz, 8-bit, mono PCM WAV. Built rather than pasted so the header stays readable. */
export function silentWavBase64(): string {
  const sampleRate = 8000;
  const samples = sampleRate / 100;
  const wav = Buffer.alloc(44 + samples, 0x80); // 0x80 is the zero level of unsigned 8-bit PCM
  wav.write("RIFF", 0, "ascii");
  wav.writeUInt32LE(36 + samples, 4);
  wav.write("WAVE", 8, "ascii");
  wav.write("fmt ", 12, "ascii");
  wav.writeUInt32LE(16, 16); // fmt chunk size
  wav.writeUInt16LE(1, 20); // PCM
  wav.writeUInt16LE(1, 22); // channels
  wav.writeUInt32LE(sampleRate, 24);
  wav.writeUInt32LE(sampleRate, 28); // byte rate = sampleRate * channels * bytesPerSample
  wav.writeUInt16LE(1, 32); // block align
  wav.writeUInt16LE(8, 34); // bits per sample
  wav.write("data", 36, "ascii");
  wav.writeUInt32LE(samples, 40);
  return wav.toString("base64");
}
