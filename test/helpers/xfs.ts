/**
 * A reflink filesystem for tests and benchmarks that need the file driver's
 * snapshots to be reflinks (changed extents that follow the change, not the
 * volume): an XFS image made with reflink=1, loop-mounted. Needs root, loop
 * devices and xfsprogs (scripts/install-test-tools.sh installs them).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Mounts a new sparse XFS image of `sizeGiB` with reflinks; returns its mount point and how to take it away again. */
export function xfsReflinkMount(sizeGiB = 4): { dir: string; remove(): void } {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-xfs-'));
  const image = path.join(base, 'xfs.img');
  const dir = path.join(base, 'mnt');
  fs.mkdirSync(dir);
  fs.writeFileSync(image, '');
  fs.truncateSync(image, sizeGiB * 1024 ** 3);
  execFileSync('mkfs.xfs', ['-q', '-m', 'reflink=1', image]);
  execFileSync('mount', ['-o', 'loop', image, dir]);
  return {
    dir,
    remove() {
      try { execFileSync('umount', [dir]); } finally { fs.rmSync(base, { recursive: true, force: true }); }
    },
  };
}
