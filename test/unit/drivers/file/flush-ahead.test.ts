/**
 * `GuardedDriver.flushAhead` over the file driver: the cached writes of a
 * volume go out to the disk while its writes still flow, so that a snapshot
 * taken right after (with the writes held) has little left to write. Seen
 * through FIEMAP: a written range the page cache still holds is a delayed
 * allocation (`delalloc`) until written back.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { FileDriver, GuardedDriver } from '../../../../src/drivers/index.ts';

/** Whether any extent of `file` is still a delayed allocation (written, cached, not yet on disk). */
function delayed(file: string): boolean {
  return /delalloc/.test(execFileSync('filefrag', ['-v', file], { encoding: 'utf8' }));
}

test('flushAhead writes out what a volume has cached, and a volume that is not there is only skipped', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-flush-ahead-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const driver = new GuardedDriver(new FileDriver({ poolName: 'p', directory: dir, totalCapacityGiB: 0 }), 60_000);
  await driver.init();
  const vol = { id: '0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0', sizeGiB: 1 };
  await driver.createVolume(vol);
  const handle = await driver.openVolume(vol);
  await handle.write(64 * 1024 * 1024, Buffer.alloc(4 * 1024 * 1024, 0x5a));
  await handle.close();
  const file = fs.readdirSync(dir).map((f) => path.join(dir, f)).find((f) => f.includes(vol.id))!;
  assert.ok(delayed(file), 'the write is cached, not yet allocated on disk');

  await driver.flushAhead([{ id: '00000000-0000-4000-8000-000000000000', sizeGiB: 1 }, vol]);
  assert.equal(delayed(file), false, 'written out');
  const h = await driver.openVolume(vol);
  assert.deepEqual(await h.read(64 * 1024 * 1024, 8), Buffer.alloc(8, 0x5a));
  await h.close();
});
