/** Flags a child `node` takes over from this server: if the guest runs Node.js with --jitless, every Node.js
 * process in it needs the flag too, and children do not see our NODE_OPTIONS (their environment is fixed). */
export function inheritedNodeFlags(): string[] {
  const fromOptions = process.env.NODE_OPTIONS?.split(/\s+/) ?? [];
  const jitless = process.execArgv.includes("--jitless") || fromOptions.includes("--jitless");
  // --jitless turns WebAssembly off anyway; saying so explicitly keeps V8's warning about it out of the snippet's stderr.
  return jitless ? ["--jitless", "--no-expose-wasm"] : [];
}
