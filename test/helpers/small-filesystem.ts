/**
 * Small filesystems to fill up in tests (a full state directory, a full
 * database disk): a tmpfs, or ext4 on a loop-mounted image. Needs root.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';

/** A small filesystem: a tmpfs, or ext4 on a loop-mounted image (which, unlike tmpfs, needs a block for a new directory). */
export type FilesystemType = 'tmpfs' | 'ext4';

/** Mounts a filesystem of `sizeKiB` on a new temporary folder; see {@link unmountAfter}. */
export function smallFilesystem(sizeKiB: number, type: FilesystemType = 'tmpfs'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-full-'));
  if (type === 'tmpfs') {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeKiB}k`, 'tmpfs', dir]);
  } else {
    const image = `${dir}.img`;
    fs.writeFileSync(image, '');
    fs.truncateSync(image, sizeKiB * 1024);
    execFileSync('mkfs.ext4', ['-q', '-m', '0', image]);
    execFileSync('mount', ['-o', 'loop', image, dir]);
  }
  return dir;
}

/** Unmounts what {@link smallFilesystem} mounted; register it after the servers using it so that it runs after they stop. */
export function unmountAfter(t: TestContext, dir: string): void {
  t.after(() => {
    execFileSync('umount', ['-l', dir]);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(`${dir}.img`, { force: true });
  });
}

/** Fills the filesystem of `dir` with one file until ENOSPC; returns its path (remove it to free the space). */
export function fill(dir: string): string {
  const filler = path.join(dir, 'filler');
  const fd = fs.openSync(filler, 'w');
  const chunk = Buffer.alloc(64 * 1024, 1);
  try {
    for (;;) fs.writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  }
  // Then the last partial page.
  for (let n = 4096; n >= 1; n = Math.floor(n / 2)) {
    try { for (;;) fs.writeSync(fd, chunk, 0, n); } catch (err) { if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err; }
  }
  fs.closeSync(fd);
  return filler;
}
