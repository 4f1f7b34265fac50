/**
 * The behavioural conformance suite every volume driver must pass: one
 * function, given a factory, that checks what the contract promises — data
 * reads back as written, snapshots are point in time, clones and volumes from
 * snapshots are independent, deletes leak nothing and are idempotent,
 * creates complete after a crash, declared capabilities work and undeclared
 * ones are refused.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import { GuardedDriver, GiB, type VolumeDriver, type VolumeRef } from '../../src/drivers/index.ts';

/** What a factory gives the suite. */
export interface DriverUnderTest {
  driver: VolumeDriver;
  /** Names of every object the backend holds now (to find leaks). */
  objects(): Promise<string[]>;
}

/** Builds a fresh, empty backend for one test; clean up with `t.after`. */
export type DriverFactory = (t: TestContext, options: { supportsRevertToSnapshot?: boolean }) => Promise<DriverUnderTest>;

const MiB = 1024 * 1024;

function pattern(seed: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (seed * 31 + i * 7) & 0xff;
  return b;
}

async function readAt(d: GuardedDriver, vol: VolumeRef, offset: number, length: number): Promise<Buffer> {
  const h = await d.openVolume(vol);
  try {
    return await h.read(offset, length);
  } finally {
    await h.close();
  }
}

async function writeAt(d: GuardedDriver, vol: VolumeRef, offset: number, data: Buffer): Promise<void> {
  const h = await d.openVolume(vol);
  try {
    await h.write(offset, data);
    await h.flush();
  } finally {
    await h.close();
  }
}

/** Registers the suite for one driver. */
export function driverConformance(name: string, factory: DriverFactory): void {
  const setup = async (t: TestContext, options: { supportsRevertToSnapshot?: boolean } = {}) => {
    const under = await factory(t, options);
    const driver = new GuardedDriver(under.driver, 60_000);
    await driver.init();
    return { driver, objects: under.objects };
  };
  const vol = (sizeGiB = 1): VolumeRef => ({ id: randomUUID(), sizeGiB });

  test(`${name}: a new volume reads as zeros and data reads back as written`, async (t) => {
    const { driver } = await setup(t);
    const v = vol();
    await driver.createVolume(v);
    assert.ok((await readAt(driver, v, 0, MiB)).equals(Buffer.alloc(MiB)));
    const data = pattern(1, 3 * 4096 + 17);
    await writeAt(driver, v, GiB - data.length, data);
    await writeAt(driver, v, 12345, data);
    assert.ok((await readAt(driver, v, GiB - data.length, data.length)).equals(data), 'at the end');
    assert.ok((await readAt(driver, v, 12345, data.length)).equals(data), 'unaligned');
    const h = await driver.openVolume(v);
    t.after(() => h.close());
    assert.equal(h.sizeBytes, GiB);
    await assert.rejects(h.read(GiB - 10, 11), /outside the volume/, 'reads past the end are refused before the driver');
    await assert.rejects(h.write(-1, Buffer.alloc(1)), /outside the volume/);
  });

  test(`${name}: create is idempotent and extend keeps data with a zero tail`, async (t) => {
    const { driver } = await setup(t);
    const v = vol();
    await driver.createVolume(v);
    const data = pattern(2, 8192);
    await writeAt(driver, v, 4096, data);
    await driver.extendVolume(v, 2);
    await driver.extendVolume(v, 2); // again: already there
    const h = await driver.openVolume({ ...v, sizeGiB: 2 });
    assert.equal(h.sizeBytes, 2 * GiB);
    assert.ok((await h.read(4096, data.length)).equals(data));
    assert.ok((await h.read(GiB + 4096, 4096)).equals(Buffer.alloc(4096)));
    await h.close();
  });

  test(`${name}: snapshots are point in time; volumes from them and clones are independent`, async (t) => {
    const { driver } = await setup(t);
    const v = vol();
    await driver.createVolume(v);
    const before = pattern(3, 65536);
    await writeAt(driver, v, MiB, before);
    const snap = { id: randomUUID(), volumeId: v.id, sizeGiB: 1 };
    await driver.createSnapshot(snap);
    await driver.createSnapshot(snap); // idempotent
    const after = pattern(4, 65536);
    await writeAt(driver, v, MiB, after);

    const fromSnap = vol(2);
    await driver.createVolumeFromSnapshot(fromSnap, snap);
    assert.ok((await readAt(driver, fromSnap, MiB, before.length)).equals(before), 'the snapshot kept the old data');
    assert.ok((await readAt(driver, fromSnap, GiB + 4096, 4096)).equals(Buffer.alloc(4096)), 'the larger tail reads as zeros');

    const clone = vol();
    await driver.cloneVolume(clone, v);
    assert.ok((await readAt(driver, clone, MiB, after.length)).equals(after), "a clone has the source's current data");
    await writeAt(driver, clone, MiB, pattern(5, 4096));
    await writeAt(driver, fromSnap, MiB, pattern(6, 4096));
    assert.ok((await readAt(driver, v, MiB, after.length)).equals(after), 'writing copies leaves the source alone');
    await driver.deleteSnapshot(snap);
    assert.ok((await readAt(driver, fromSnap, MiB + 4096, 4096)).equals(before.subarray(4096, 8192)), 'a volume outlives its snapshot');
    await driver.deleteVolume(v);
    assert.ok((await readAt(driver, clone, MiB + 4096, 4096)).equals(after.subarray(4096, 8192)), 'a clone outlives its source');
  });

  test(`${name}: deletes leak nothing and are idempotent`, async (t) => {
    const { driver, objects } = await setup(t);
    const empty = await objects();
    const v = vol();
    await driver.createVolume(v);
    await writeAt(driver, v, 0, pattern(7, 4096));
    const snap = { id: randomUUID(), volumeId: v.id, sizeGiB: 1 };
    await driver.createSnapshot(snap);
    const c = vol();
    await driver.cloneVolume(c, v);
    assert.ok((await objects()).length > empty.length);
    await driver.deleteSnapshot(snap);
    await driver.deleteVolume(v);
    await driver.deleteVolume(c);
    await driver.deleteVolume(c);
    await driver.deleteSnapshot(snap);
    assert.deepEqual(await objects(), empty);
    const stats = await driver.getStats();
    assert.ok(stats.pools.length >= 1);
    assert.equal(stats.pools[0]!.provisionedCapacityGiB, 0);
  });

  test(`${name}: revert puts the snapshot's data back when declared`, async (t) => {
    const { driver } = await setup(t);
    const v = vol();
    await driver.createVolume(v);
    const old = pattern(8, 4096);
    await writeAt(driver, v, 0, old);
    const snap = { id: randomUUID(), volumeId: v.id, sizeGiB: 1 };
    await driver.createSnapshot(snap);
    await writeAt(driver, v, 0, pattern(9, 4096));
    if (driver.capabilities.supportsRevertToSnapshot) {
      await driver.revertToSnapshot(v, snap);
      assert.ok((await readAt(driver, v, 0, 4096)).equals(old));
    } else {
      await assert.rejects(driver.revertToSnapshot(v, snap), /cannot revert/);
    }
  });

  test(`${name}: write-zeroes, trim and block status`, async (t) => {
    const { driver } = await setup(t);
    const v = vol();
    await driver.createVolume(v);
    const h = await driver.openVolume(v);
    t.after(() => h.close());
    const fresh = await h.blockStatus!(0, 4 * MiB);
    assert.ok(fresh.every((e) => e.zero), 'a new volume reads as zeros in block status');
    await h.write(MiB, pattern(10, MiB));
    await h.flush();
    const after = await h.blockStatus!(0, 4 * MiB);
    let pos = 0;
    let dataSeen = false;
    for (const e of after) {
      if (pos < 2 * MiB && pos + e.length > MiB && !e.zero) dataSeen = true;
      pos += e.length;
    }
    assert.ok(dataSeen, 'written data shows as data');
    assert.ok(pos > 0 && pos <= 4 * MiB);
    await h.writeZeroes!(MiB, 4096, false);
    assert.ok((await h.read(MiB, 4096)).equals(Buffer.alloc(4096)), 'write-zeroes without punching reads as zeros');
    await h.writeZeroes!(MiB + 4096, 65536, true);
    assert.ok((await h.read(MiB + 4096, 65536)).equals(Buffer.alloc(65536)), 'write-zeroes with punching reads as zeros');
    assert.ok((await h.read(MiB + 4096 + 65536, 4096)).equals(pattern(10, MiB).subarray(4096 + 65536, 4096 + 65536 + 4096)), 'data after the range is kept');
    await h.trim!(0, 4 * MiB);
    await assert.rejects(h.writeZeroes!(GiB - 1, 2, false), /outside the volume/);
  });

  test(`${name}: an undeclared capability is refused`, async (t) => {
    const { driver } = await setup(t, { supportsRevertToSnapshot: false });
    assert.equal(driver.capabilities.supportsRevertToSnapshot, false);
    const v = vol();
    await driver.createVolume(v);
    const snap = { id: randomUUID(), volumeId: v.id, sizeGiB: 1 };
    await driver.createSnapshot(snap);
    await assert.rejects(driver.revertToSnapshot(v, snap), (e: { code: string }) => e.code === 'NOT_IMPLEMENTED');
  });
}
