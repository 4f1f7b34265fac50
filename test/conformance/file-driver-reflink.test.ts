/**
 * The file driver's conformance on a reflink filesystem: an XFS image made
 * with reflink=1 and loop-mounted (needs root, loop devices and xfsprogs,
 * which scripts/install-test-tools.sh installs). Here snapshots and clones
 * must be reflinks, not copies.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { FileDriver } from '../../src/drivers/index.ts';
import { driverConformance } from './driver-conformance.ts';
import { fileDriverFactory } from './file-factory.ts';

let mnt = '';
let base = '';
before(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-xfs-test-'));
  const image = path.join(base, 'xfs.img');
  mnt = path.join(base, 'mnt');
  fs.mkdirSync(mnt);
  fs.writeFileSync(image, '');
  fs.truncateSync(image, 4 * 1024 ** 3);
  execFileSync('mkfs.xfs', ['-q', '-m', 'reflink=1', image]);
  execFileSync('mount', ['-o', 'loop', image, mnt]);
});
after(() => {
  try { execFileSync('umount', [mnt]); } finally { fs.rmSync(base, { recursive: true, force: true }); }
});

driverConformance('file on xfs+reflink', fileDriverFactory(() => fs.mkdtempSync(path.join(mnt, 'case-'))));

test('file on xfs+reflink: snapshots are reflinks', async () => {
  const dir = fs.mkdtempSync(path.join(mnt, 'reflink-'));
  const driver = new FileDriver({ poolName: 'file', directory: dir, totalCapacityGiB: 0 });
  await driver.init();
  assert.equal((await driver.getStats()).pools[0]!.copyMethod, 'reflink');
  const id = randomUUID();
  await driver.createVolume({ id, sizeGiB: 1 });
  const h = await driver.openVolume({ id, sizeGiB: 1 });
  await h.write(0, Buffer.alloc(64 * 1024 * 1024, 3));
  await h.flush();
  await h.close();
  const free = (await fs.promises.statfs(dir)).bavail;
  await driver.createSnapshot({ id: randomUUID(), volumeId: id, sizeGiB: 1 });
  const used = (free - (await fs.promises.statfs(dir)).bavail) * (await fs.promises.statfs(dir)).bsize;
  assert.ok(used < 8 * 1024 * 1024, `a reflink snapshot of 64 MiB of data takes no new space (took ${used} bytes)`);
});

test('file on xfs+reflink: changed extents are the blocks a volume no longer shares with its snapshot', async () => {
  const dir = fs.mkdtempSync(path.join(mnt, 'changed-'));
  const driver = new FileDriver({ poolName: 'file', directory: dir, totalCapacityGiB: 0 });
  await driver.init();
  const vol = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(vol);
  let h = await driver.openVolume(vol);
  await h.write(0, Buffer.alloc(64 * 1024 * 1024, 3));
  await h.flush();
  await h.close();
  const snap = { id: randomUUID(), volumeId: vol.id, sizeGiB: 1 };
  await driver.createSnapshot(snap);
  assert.deepEqual(await driver.changedExtents(vol, snap), [], 'right after the snapshot every block is shared');
  h = await driver.openVolume(vol);
  await h.write(10 * 1024 * 1024, Buffer.alloc(4096, 4)); // over shared blocks: copied on write, not flushed yet
  await h.write(200 * 1024 * 1024, Buffer.alloc(4096, 5)); // where both had a hole
  await h.close();
  const changed = await driver.changedExtents(vol, snap);
  const total = changed.reduce((n, e) => n + e.length, 0);
  const covers = (offset: number) => changed.some((e) => e.offset <= offset && offset + 4096 <= e.offset + e.length);
  assert.ok(covers(10 * 1024 * 1024) && covers(200 * 1024 * 1024), JSON.stringify(changed));
  assert.ok(total <= 4 * 1024 * 1024, `only the written blocks (and their copy-on-write neighbourhood) changed: ${total} bytes`);
});
