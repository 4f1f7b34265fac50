/**
 * A copy made under a lock stops at its next chunk once the lock is lost
 * (src/volume/operations/volume-migrate.ts `copyVolume`): nothing is read or
 * written after the signal, so a copy another holder has started meanwhile is
 * not written over.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryDriver } from '../../../src/drivers/memory/memory-driver.ts';
import { GuardedDriver, type VolumeHandle } from '../../../src/drivers/index.ts';
import { copyVolume } from '../../../src/volume/operations/volume-migrate.ts';

const MiB = 1024 * 1024;

test('a migration copy whose lock is lost stops at its next chunk and says why', async () => {
  const vol = { id: 'v1', sizeGiB: 1 };
  const source = new MemoryDriver({ poolName: 'a' });
  const dest = new GuardedDriver(new MemoryDriver({ poolName: 'b' }), 60_000);
  await source.createVolume(vol);
  await dest.createVolume(vol);
  const h = await source.openVolume(vol);
  await h.write(0, Buffer.alloc(64 * MiB, 7)); // sixteen chunks of data
  await h.close();

  const lost = new AbortController();
  const reads: number[] = [];
  // The source's handle as it is, but the lock is lost during the second chunk's read.
  const counting = {
    openVolume: async (v: typeof vol): Promise<VolumeHandle> => {
      const inner = await source.openVolume(v);
      return Object.assign(Object.create(inner) as VolumeHandle, {
        read: async (offset: number, length: number) => {
          reads.push(offset);
          if (reads.length === 2) lost.abort(new Error('its PostgreSQL session ended'));
          return inner.read(offset, length);
        },
      });
    },
  };
  await assert.rejects(copyVolume(counting, dest, vol, lost.signal), /PostgreSQL session ended/);
  assert.deepEqual(reads, [0, 4 * MiB], 'no chunk is read once the lock is lost');
  const d = await dest.openVolume(vol);
  try {
    assert.equal((await d.read(8 * MiB, 4096)).every((b) => b === 0), true, 'nothing is written past the chunk in flight');
  } finally {
    await d.close();
  }

  // Kept to the end, the same copy is whole.
  await copyVolume(source, dest, vol, new AbortController().signal);
  const whole = await dest.openVolume(vol);
  try {
    assert.equal((await whole.read(60 * MiB, 4 * MiB)).every((b) => b === 7), true);
  } finally {
    await whole.close();
  }
});
