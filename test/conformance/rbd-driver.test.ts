/**
 * The rbd driver passes the conformance suite against a real one-node Ceph
 * cluster (rbd-fixture.ts), and keeps Cinder's RBD behaviour: images with
 * layering, exclusive-lock, object-map and fast-diff, snapshots as RBD
 * snapshots, copy-on-write clones flattened past rbd_max_clone_depth, pool
 * stats from the cluster, handles of a volume sharing one open image,
 * changed extents from the object maps, and a user with only the rbd profile
 * is enough. Faults and recovery are in rbd-driver-faults.test.ts and rbd-driver-kills.test.ts.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { GiB, GuardedDriver, RbdDriver } from '../../src/drivers/index.ts';
import type { RbdAddon } from '../../src/drivers/rbd/rbd-addon.ts';
import { driverConformance } from './driver-conformance.ts';
import { rbdFixture } from './rbd-fixture.ts';

const { ceph, rbdBackend, objects, info } = await rbdFixture();

driverConformance('rbd', async () => {
  const { driver, pool } = await rbdBackend();
  return {
    driver, objects: () => objects(pool),
    // The suite kills its child at the first matching system call counted from the child's start,
    // which for librbd falls inside connecting, before any create: rbd-driver-kills.test.ts kills
    // inside librbd's create, snapshot and clone instead and checks the retry.
    noChild: 'killed mid-create by rbd-driver-kills.test.ts (the suite can only kill librbd while it connects)',
  };
}, {
  // A create or an open is a few milliseconds of round trips to the cluster, but its
  // daemons share two cores with the whole suite: with a load of 15, single calls took
  // more than 800 ms.
  timeoutMs: 3000,
});

test('rbd: images have layering, exclusive-lock, object-map and fast-diff; snapshots are RBD snapshots; volumes from them are COW clones', async () => {
  const { driver: raw, pool } = await rbdBackend();
  const driver = new GuardedDriver(raw, 60_000);
  await driver.init();
  const v = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(v);
  const image = RbdDriver.imageName(v.id);
  const features = (await info(pool, image)).features;
  for (const f of ['layering', 'exclusive-lock', 'object-map', 'fast-diff']) assert.ok(features.includes(f), f);
  const snap = { id: randomUUID(), volumeId: v.id, sizeGiB: 1 };
  await driver.createSnapshot(snap);
  assert.ok((await objects(pool)).includes(`${image}@${RbdDriver.snapName(snap.id)}`), 'an RBD snapshot of the volume\'s image');
  const copy = { id: randomUUID(), sizeGiB: 2 };
  await driver.createVolumeFromSnapshot(copy, snap);
  const parent = (await info(pool, RbdDriver.imageName(copy.id))).parent;
  assert.deepEqual({ image: parent?.image, snapshot: parent?.snapshot }, { image, snapshot: RbdDriver.snapName(snap.id) }, 'a copy-on-write clone of the snapshot');
  const clone = { id: randomUUID(), sizeGiB: 1 };
  await driver.cloneVolume(clone, v);
  assert.equal((await info(pool, RbdDriver.imageName(clone.id))).parent?.image, image, 'a clone of a volume is a COW clone too');
  const stats = await driver.getStats();
  assert.equal(stats.pools[0]!.copyMethod, 'cow');
  assert.ok(stats.pools[0]!.totalCapacityGiB > 0 && stats.pools[0]!.freeCapacityGiB > 0 && stats.pools[0]!.freeCapacityGiB <= stats.pools[0]!.totalCapacityGiB);
  assert.equal(stats.pools[0]!.provisionedCapacityGiB, 4, 'the sizes of the images (1 + 2 + 1 GiB)');
  // Every image of the pool counts, as with Cinder: one made behind Basalt's back too.
  await ceph.rbd('create', '--size', '3G', `${pool}/foreign`);
  assert.equal((await driver.getStats()).pools[0]!.provisionedCapacityGiB, 7, 'and 3 GiB of an image Basalt did not make');
  await ceph.rbd('rm', `${pool}/foreign`);
});

test('rbd: a clone whose chain of parents passes rbd_max_clone_depth is flattened, and its data kept', async () => {
  const { driver: raw, pool } = await rbdBackend({ rbd_max_clone_depth: 2 });
  const driver = new GuardedDriver(raw, 60_000);
  await driver.init();
  const chain = [{ id: randomUUID(), sizeGiB: 1 }];
  await driver.createVolume(chain[0]!);
  const h = await driver.openVolume(chain[0]!);
  const data = Buffer.alloc(65536, 0x5a);
  await h.write(GiB / 2, data);
  await h.flush();
  await h.close();
  for (let i = 1; i <= 3; i++) {
    const next = { id: randomUUID(), sizeGiB: 1 };
    await driver.cloneVolume(next, chain[i - 1]!);
    chain.push(next);
  }
  const parents = await Promise.all(chain.map(async (v) => (await info(pool, RbdDriver.imageName(v.id))).parent?.image ?? null));
  assert.equal(parents[0], null);
  assert.equal(parents[1], RbdDriver.imageName(chain[0]!.id), 'depth 1: a clone');
  assert.equal(parents[2], RbdDriver.imageName(chain[1]!.id), 'depth 2: a clone');
  assert.equal(parents[3], null, 'depth 3 would pass rbd_max_clone_depth = 2: flattened');
  const last = await driver.openVolume(chain[3]!);
  assert.ok((await last.read(GiB / 2, data.length)).equals(data));
  await last.close();
  for (const v of [...chain].reverse()) await driver.deleteVolume(v);
  assert.deepEqual(await objects(pool), []);
});

test('rbd: the handles of a volume share one open image, and close at shutdown closes what handles still hold', async () => {
  const { driver } = await rbdBackend();
  await driver.init!();
  const v = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(v);
  const [h1, h2] = await Promise.all([driver.openVolume(v), driver.openVolume(v)]);
  await h1!.write(0, Buffer.alloc(4096, 9));
  assert.ok((await h2!.read(0, 4096)).equals(Buffer.alloc(4096, 9)), 'unflushed, and read back through the other handle');
  await h1!.close();
  assert.ok((await h2!.read(0, 4096)).equals(Buffer.alloc(4096, 9)), 'the image stays open for the handle left');
  await driver.close!(); // h2 is still open: the driver closes its image, then disconnects
  await assert.rejects(h2!.read(0, 4096), (e: { code: string }) => e.code === 'EBADF');
  await h2!.close(); // and closing it afterwards is quiet
});

test('rbd: a snapshot, an extend and a snapshot delete of a volume open for I/O go through its open image, not a second one', async (t) => {
  const { driver } = await rbdBackend();
  await driver.init!();
  const v = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(v);
  const h = await driver.openVolume(v);
  await h.write(0, Buffer.alloc(4096, 3));
  // Count the images the driver opens read-write meanwhile, through a proxy of its addon.
  const inner = driver as unknown as { addon: RbdAddon };
  const addon = inner.addon;
  const opened: string[] = [];
  const counting = Object.fromEntries(Object.getOwnPropertyNames(addon).map((k) => [k, (addon as unknown as Record<string, unknown>)[k]])) as unknown as RbdAddon;
  counting.openImage = (...a) => { if (a[4] === false) opened.push(a[2]); return addon.openImage(...a); };
  inner.addon = counting;
  t.after(() => { inner.addon = addon; });
  const snap = { id: randomUUID(), volumeId: v.id, sizeGiB: 1 };
  await driver.createSnapshot(snap);
  await driver.extendVolume(v, 2);
  await driver.deleteSnapshot(snap);
  inner.addon = addon;
  assert.deepEqual(opened, [], 'no second read-write image of the volume (it would take the exclusive lock from the first around each call)');
  await h.write(4096, Buffer.alloc(4096, 4));
  assert.ok((await h.read(0, 8192)).equals(Buffer.concat([Buffer.alloc(4096, 3), Buffer.alloc(4096, 4)])));
  await h.close();
  await driver.deleteVolume(v);
  await driver.close!();
});

test('rbd: a cephx user with only the rbd profile on its pool (as Cinder\'s docs create) is enough', async (t) => {
  const pool = await ceph.newPool();
  // A user of this pool's own: on a shared cluster another run's user has another pool's caps.
  const user = `basalt-rbd-${pool}`;
  const keyring = await ceph.ceph('auth', 'get-or-create', `client.${user}`, 'mon', 'profile rbd', 'osd', `profile rbd pool=${pool}`, 'mgr', `profile rbd pool=${pool}`);
  t.after(() => ceph.ceph('auth', 'rm', `client.${user}`));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-rbd-user-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'keyring'), keyring);
  const { driver: raw } = await rbdBackend({ rbd_pool: pool, rbd_user: user, rbd_keyring_conf: path.join(dir, 'keyring'), rbd_max_clone_depth: 0 });
  const driver = new GuardedDriver(raw, 60_000);
  await driver.init();
  assert.ok((await driver.getStats()).pools[0]!.freeCapacityGiB > 0, 'ceph df is allowed');
  const v = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(v);
  const snap = { id: randomUUID(), volumeId: v.id, sizeGiB: 1 };
  await driver.createSnapshot(snap);
  const fromSnap = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolumeFromSnapshot(fromSnap, snap);
  const clone = { id: randomUUID(), sizeGiB: 1 };
  await driver.cloneVolume(clone, v); // flattened: rbd_max_clone_depth = 0
  await driver.deleteSnapshot(snap);
  for (const x of [v, clone, fromSnap]) await driver.deleteVolume(x);
  assert.deepEqual(await objects(pool), []);
});

test('rbd: changed extents come whole objects from the object maps: writes and discards between two snapshots, nothing since the last', async () => {
  const { driver: raw } = await rbdBackend();
  const driver = new GuardedDriver(raw, 60_000);
  await driver.init();
  const MiB = 1024 * 1024;
  const v = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(v);
  let h = await driver.openVolume(v);
  await h.write(0, Buffer.alloc(4096, 1));
  await h.write(100 * MiB, Buffer.alloc(4096, 2));
  await h.flush();
  await h.close();
  const s1 = { id: randomUUID(), volumeId: v.id, sizeGiB: 1 };
  await driver.createSnapshot(s1);
  h = await driver.openVolume(v);
  await h.write(513 * MiB, Buffer.alloc(4096, 3)); // in the 4 MiB object at 512 MiB
  await h.trim!(100 * MiB, 4 * MiB); // the whole object at 100 MiB: gone, i.e. changed to zeros
  await h.flush();
  await h.close();
  const s2 = { id: randomUUID(), volumeId: v.id, sizeGiB: 1 };
  await driver.createSnapshot(s2);
  assert.deepEqual(await driver.changedExtents(v, s1, s2), [{ offset: 100 * MiB, length: 4 * MiB }, { offset: 512 * MiB, length: 4 * MiB }]);
  assert.deepEqual(await driver.changedExtents(v, s2), [], 'nothing written since s2');
  assert.deepEqual(await driver.changedExtents(v, s1), [{ offset: 100 * MiB, length: 4 * MiB }, { offset: 512 * MiB, length: 4 * MiB }], 'the head differs from s1 as s2 does');
  await assert.rejects(driver.changedExtents(v, { id: randomUUID(), volumeId: v.id, sizeGiB: 1 }), (e: { code: string; message: string }) =>
    e.code === 'DRIVER_FAILED' && /snapshot .* is missing/.test(e.message));
  for (const s of [s1, s2]) await driver.deleteSnapshot(s);
  await driver.deleteVolume(v);
});

test('rbd: images Basalt keeps for clones or is still copying are listed as not safe to manage, and cannot be adopted', async () => {
  const { driver: raw, pool } = await rbdBackend();
  const driver = new GuardedDriver(raw, 60_000);
  await driver.init();
  const kept = `${RbdDriver.imageName(randomUUID())}.deleted`;
  const copying = `${RbdDriver.imageName(randomUUID())}.copying`;
  for (const name of [kept, copying, 'foreign']) await ceph.rbd('create', '--size', '1G', `${pool}/${name}`);
  await ceph.rbd('snap', 'create', `${pool}/${copying}@s`);
  try {
    const listed = new Map((await driver.listManageableVolumes()).map((r) => [r.reference['source-name'], r]));
    assert.equal(listed.get('foreign')?.safeToManage, true, 'an image Basalt did not make is safe');
    for (const [name, reason] of [[kept, /deleted volume kept/], [copying, /copy Basalt is making/]] as const) {
      assert.equal(listed.get(name)?.safeToManage, false, name);
      assert.match(listed.get(name)!.reasonNotSafe ?? '', reason);
      await assert.rejects(driver.manageExistingGetSize({ 'source-name': name }), /kept by Basalt|copy Basalt is making/);
    }
    const snap = (await driver.listManageableSnapshots()).find((r) => r.sourceReference?.['source-name'] === copying);
    assert.equal(snap?.safeToManage, false, 'nor is a snapshot of a copy under way');
  } finally {
    await ceph.rbd('snap', 'purge', `${pool}/${copying}`);
    for (const name of [kept, copying, 'foreign']) await ceph.rbd('rm', `${pool}/${name}`);
  }
});
