/** The guard applies the capability defaults in one place: a driver that declares nothing gets the safe answer everywhere. */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { CAPABILITY_DEFAULTS, GuardedDriver, MemoryDriver, resolveCapabilities, type ChangedExtent, type DeclaredCapabilities, type NativeConnection } from '../../../src/drivers/index.ts';

const SILENT: Partial<DeclaredCapabilities> = Object.fromEntries(Object.keys(CAPABILITY_DEFAULTS).map((k) => [k, undefined]));

test('resolveCapabilities fills what is not declared, and an explicit undefined is not a declaration', () => {
  const caps = resolveCapabilities({ vendorName: 'V', driverVersion: '1', canMultiConn: true, supportsOnlineExtend: undefined });
  assert.deepEqual(caps, { ...CAPABILITY_DEFAULTS, vendorName: 'V', driverVersion: '1', canMultiConn: true });
  assert.ok(Object.isFrozen(caps));
  assert.ok(Object.values(CAPABILITY_DEFAULTS).every((v) => v === false || v === 'nbd'), 'every default is the safe answer');
});

test('a driver that declares nothing is driven with the safe defaults', async () => {
  const driver = new GuardedDriver(new MemoryDriver({ poolName: 'p', declare: SILENT }), 60_000);
  assert.deepEqual({ ...driver.capabilities }, { ...CAPABILITY_DEFAULTS, vendorName: 'Basalt', driverVersion: '1.0.0' });
  const v = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(v);
  const snap = { id: randomUUID(), volumeId: v.id, sizeGiB: 1 };
  await driver.createSnapshot(snap);
  await assert.rejects(driver.revertToSnapshot(v, snap), /cannot revert/);
  assert.throws(() => driver.localPath(v), /no local paths/);
  const h = await driver.openVolume(v);
  assert.equal(h.fd, undefined);
  await assert.rejects(driver.extendVolume(v, 2), /while it is attached/);
  await Promise.all([h.write(0, Buffer.alloc(4096, 1)), h.write(4096, Buffer.alloc(4096, 2)), h.read(0, 8192)]);
  assert.ok((await h.read(4096, 4096)).equals(Buffer.alloc(4096, 2)));
  await h.close();
  await assert.rejects(h.read(0, 1), /closed/, 'a closed handle refuses calls before the driver sees them');
  await driver.extendVolume(v, 2);
  await driver.close();
});

test('a native connection is asked for with the id placeholder, and an answer that does not name the volume is refused', async () => {
  const mem = new MemoryDriver({ poolName: 'p' });
  let answer: unknown = { driverVolumeType: 'rbd', data: { name: 'pool/volume-{volume_id}', volume_id: '{volume_id}' } };
  const asked: string[] = [];
  // The memory driver with a native connection: its own methods, plus the one under test.
  const native = Object.assign(Object.create(mem) as MemoryDriver, {
    capabilities: { ...mem.capabilities, supportsNativeConnection: true },
    nativeConnection: async (vol: { id: string }) => { asked.push(vol.id); return answer as NativeConnection | undefined; },
  });
  const driver = new GuardedDriver(native, 60_000);
  assert.deepEqual(await driver.nativeConnectionTemplate(), answer);
  assert.deepEqual(asked, ['{volume_id}']);
  answer = undefined;
  assert.equal(await driver.nativeConnectionTemplate(), undefined, 'none now: hosts use NBD');
  answer = { driverVolumeType: 'rbd', data: { name: 'pool/some-image' } };
  await assert.rejects(driver.nativeConnectionTemplate(), /naming the volume by its id/);
  const silent = new GuardedDriver(new MemoryDriver({ poolName: 'p', declare: SILENT }), 60_000);
  assert.equal(await silent.nativeConnectionTemplate(), undefined, 'not declared: none');
});

test('changed extents: refused when not declared; an answer out of order or outside the volume is refused', async () => {
  const mem = new MemoryDriver({ poolName: 'p' });
  let answer: unknown = [{ offset: 0, length: 4096 }, { offset: 1024 ** 2, length: 65536 }];
  const diffing = Object.assign(Object.create(mem) as MemoryDriver, {
    capabilities: { ...mem.capabilities, supportsChangedExtents: true },
    changedExtents: async () => answer as ChangedExtent[],
  });
  const driver = new GuardedDriver(diffing, 60_000);
  const v = { id: randomUUID(), sizeGiB: 1 };
  const from = { id: randomUUID(), volumeId: v.id, sizeGiB: 1 };
  assert.deepEqual(await driver.changedExtents(v, from), answer);
  for (const bad of [[{ offset: 8192, length: 1 }, { offset: 0, length: 1 }], [{ offset: 1024 ** 3 - 1, length: 2 }], [{ offset: -1, length: 1 }], 'nope']) {
    answer = bad;
    await assert.rejects(driver.changedExtents(v, from), /changedExtents gave extents/);
  }
  const silent = new GuardedDriver(new MemoryDriver({ poolName: 'p', declare: SILENT }), 60_000);
  await assert.rejects(silent.changedExtents(v, from), (e: { code: string }) => e.code === 'NOT_IMPLEMENTED');
});
