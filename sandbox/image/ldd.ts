import { run } from "./exec.js";

export interface SharedLibrary {
  /** As the binary names it (a soname), or, for the dynamic loader, its path. */
  name: string;
  /** Where the loader finds it on this host (what the guest must have at that path); null: not found. */
  path: string | null;
}

/**
 * The shared libraries the loader resolves for `file` (`ldd`), the vDSO left out. Empty for a file
 * that is not dynamically linked (ldd exits 1).
 */
export async function sharedLibrariesOf(file: string): Promise<SharedLibrary[]> {
  const { stdout } = await run("ldd", [file], { okCodes: [1] });
  const libraries: SharedLibrary[] = [];
  for (const line of stdout.split("\n")) {
    // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)", "libx.so => not found",
    // "/lib64/ld-linux-x86-64.so.2 (0x...)"
    const linked = /^\s*(\S+) => (?:(\/\S+)|not found)/.exec(line);
    const loader = /^\s*(\/\S+)\s+\(/.exec(line);
    if (linked) libraries.push({ name: linked[1]!, path: linked[2] ?? null });
    else if (loader) libraries.push({ name: loader[1]!, path: loader[1]! });
  }
  return libraries;
}
