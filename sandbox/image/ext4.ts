/**
 * Read-only ext4 images made straight from a directory with `mkfs.ext4 -d`: no loop mount, no root
 * needed for mounting, and the guest mounts them read-only so there is no journal and little slack.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { CommandError, run } from "./exec.js";

const BLOCK = 4096;

interface TreeSize {
  blocks: number;
  inodes: number;
}

/** Blocks the tree's files and directories occupy at 4 KiB per block, and how many inodes it needs. */
async function measureTree(dir: string): Promise<TreeSize> {
  let blocks = 0;
  let inodes = 0;
  const walk = async (d: string) => {
    const entries = await fs.promises.readdir(d, { withFileTypes: true });
    inodes++;
    // A directory entry costs ~8 bytes plus its name; big directories span several blocks.
    blocks += Math.max(1, Math.ceil(entries.reduce((n, e) => n + 12 + e.name.length, 24) / BLOCK));
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else {
        inodes++;
        if (e.isFile()) blocks += Math.ceil((await fs.promises.stat(p)).size / BLOCK);
        else if (e.isSymbolicLink()) blocks += (await fs.promises.readlink(p)).length >= 60 ? 1 : 0;
      }
    }
  };
  await walk(dir);
  return { blocks, inodes };
}

export interface Ext4Result {
  bytes: number;
  inodes: number;
}

/**
 * Writes `img` (a new file) holding `dir`, labelled `label`. Sized from the content plus a margin for
 * metadata; if mkfs still runs out of room (extent trees of fragmented big files), retry larger.
 */
export async function makeExt4(dir: string, img: string, label: string): Promise<Ext4Result> {
  const { blocks, inodes } = await measureTree(dir);
  const inodeCount = inodes + 64 + Math.ceil(inodes * 0.05);
  let sizeBlocks = Math.ceil(blocks * 1.05) + Math.ceil((inodeCount * 256) / BLOCK) + 2048;
  for (let attempt = 0; ; attempt++) {
    await fs.promises.rm(img, { force: true });
    try {
      await run("mkfs.ext4", [
        "-q",
        "-F",
        "-t", "ext4",
        "-b", String(BLOCK),
        "-I", "256",
        "-m", "0",
        "-N", String(inodeCount),
        "-L", label,
        "-O", "^has_journal,^resize_inode",
        "-E", "root_owner=0:0",
        "-d", dir,
        img,
        `${sizeBlocks * (BLOCK / 1024)}k`,
      ]);
      return { bytes: sizeBlocks * BLOCK, inodes: inodeCount };
    } catch (err) {
      const full = err instanceof CommandError && /space|allocate|No free/i.test(err.stderr);
      if (!full || attempt >= 3) throw err;
      sizeBlocks = Math.ceil(sizeBlocks * 1.25);
    }
  }
}
