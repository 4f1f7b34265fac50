/**
 * Snapshot and clone benchmark of the `file` driver: for 1 GiB and 16 GiB
 * volumes with 10% of their blocks written (1 MiB extents spread over the
 * volume), times createSnapshot, cloneVolume and createVolumeFromSnapshot, and
 * `cp --sparse=always --reflink=auto` of the same file as the peer, on
 *   - the filesystem of the state directory (here ext4: sparse-aware copies), and
 *   - where the machine allows (root, loop devices, mkfs.xfs), an XFS image
 *     made with `reflink=1` and loop-mounted (reflinks).
 *
 *   node --import tsx bench/snapshot.ts [--sizes 1,16] [--dir DIR] [--no-xfs]
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { FileDriver, GiB } from '../src/drivers/index.ts';

const { values: args } = parseArgs({
  options: { sizes: { type: 'string', default: '1,16' }, dir: { type: 'string' }, 'no-xfs': { type: 'boolean', default: false } },
});
const sizes = args.sizes!.split(',').map(Number);
const MiB = 1024 * 1024;

function ms(t: number): number {
  return Math.round((performance.now() - t) * 10) / 10;
}

function allocatedMiB(file: string): number {
  return Math.round((fs.statSync(file).blocks * 512) / MiB);
}

async function measure(label: string, dir: string): Promise<void> {
  const driver = new FileDriver({ poolName: 'bench', directory: dir, totalCapacityGiB: 0 });
  await driver.init();
  const method = (await driver.getStats()).pools[0]!.copyMethod;
  for (const sizeGiB of sizes) {
    const vol = { id: randomUUID(), sizeGiB };
    await driver.createVolume(vol);
    // 10% of the volume in 1 MiB extents, evenly spread.
    const h = await driver.openVolume(vol);
    const extents = Math.round((sizeGiB * GiB * 0.1) / MiB);
    const stride = Math.floor((sizeGiB * GiB) / extents);
    const block = Buffer.alloc(MiB, 0xab);
    const tw = performance.now();
    for (let i = 0; i < extents; i++) await h.write(i * stride, block);
    await h.flush();
    await h.close();
    const writeMs = ms(tw);
    execFileSync('sync');

    const snap = { id: randomUUID(), volumeId: vol.id, sizeGiB };
    let t = performance.now();
    await driver.createSnapshot(snap);
    const snapMs = ms(t);
    const clone = { id: randomUUID(), sizeGiB };
    t = performance.now();
    await driver.cloneVolume(clone, vol);
    const cloneMs = ms(t);
    const fromSnap = { id: randomUUID(), sizeGiB };
    t = performance.now();
    await driver.createVolumeFromSnapshot(fromSnap, snap);
    const fromSnapMs = ms(t);
    const peerFile = path.join(dir, 'peer-copy');
    t = performance.now();
    execFileSync('cp', ['--sparse=always', '--reflink=auto', driver.volumePath(vol.id), peerFile]);
    execFileSync('sync', ['-f', peerFile]);
    const peerMs = ms(t);
    console.log(JSON.stringify({
      filesystem: label, method, size_gib: sizeGiB, written_mib: extents, write_ms: writeMs,
      snapshot_ms: snapMs, clone_ms: cloneMs, volume_from_snapshot_ms: fromSnapMs, cp_sparse_reflink_ms: peerMs,
      ratio_snapshot_vs_cp: peerMs > 0 ? Math.round((snapMs / peerMs) * 100) / 100 : null,
      snapshot_allocated_mib: allocatedMiB(driver.snapshotPath(snap.id)),
    }));
    fs.rmSync(peerFile, { force: true });
    for (const v of [vol, clone, fromSnap]) await driver.deleteVolume(v);
    await driver.deleteSnapshot(snap);
  }
}

/** Makes and mounts an XFS image with reflink=1; returns the mount point and a cleanup, or undefined. */
function mountXfs(): { dir: string; cleanup: () => void } | undefined {
  if (args['no-xfs'] || process.getuid?.() !== 0) return undefined;
  try {
    execFileSync('which', ['mkfs.xfs'], { stdio: 'ignore' });
  } catch {
    console.error('# no mkfs.xfs (apt-get install xfsprogs): skipping the reflink filesystem');
    return undefined;
  }
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-xfs-'));
  const image = path.join(base, 'xfs.img');
  const mnt = path.join(base, 'mnt');
  fs.mkdirSync(mnt);
  fs.writeFileSync(image, '');
  fs.truncateSync(image, (Math.max(...sizes) * 3 + 4) * GiB);
  try {
    execFileSync('mkfs.xfs', ['-q', '-m', 'reflink=1', image]);
    execFileSync('mount', ['-o', 'loop', image, mnt]);
  } catch (err) {
    console.error(`# cannot loop-mount an XFS image here (${(err as Error).message.split('\n')[0]}): skipping the reflink filesystem`);
    fs.rmSync(base, { recursive: true, force: true });
    return undefined;
  }
  return {
    dir: mnt,
    cleanup: () => {
      try { execFileSync('umount', [mnt]); } finally { fs.rmSync(base, { recursive: true, force: true }); }
    },
  };
}

async function main(): Promise<void> {
  const dir = args.dir ?? fs.mkdtempSync(path.join(process.cwd(), '.bench-snapshot-'));
  try {
    const fsType = execFileSync('stat', ['-f', '-c', '%T', dir]).toString().trim();
    await measure(fsType, dir);
  } finally {
    if (!args.dir) fs.rmSync(dir, { recursive: true, force: true });
  }
  const xfs = mountXfs();
  if (xfs) {
    try {
      await measure('xfs (reflink=1, loop)', xfs.dir);
    } finally {
      xfs.cleanup();
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
