/**
 * The rbd driver and its addon under faults, against a real one-node Ceph
 * cluster (rbd-fixture.ts): a cluster it cannot reach or that refuses its
 * credentials, calls killed (SIGKILL) inside librbd or left half done and
 * completed on retry, the event loop kept free while librbd works, and what
 * the addon refuses rather than crash, a pool at its quota, and a member
 * that stops answering losing its volume to another (exclusive-lock handover
 * and blocklisting).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { after, test, type TestContext } from 'node:test';
import { GiB, GuardedDriver, RbdDriver, rbdRegistration, type VolumeRef } from '../../src/drivers/index.ts';
import { loadRbdAddon, type RbdAddon, type RbdCluster } from '../../src/drivers/rbd/rbd-addon.ts';
import { freePort } from '../helpers/net.ts';
import type { ChildCall } from './driver-child.ts';
import { rbdFixture } from './rbd-fixture.ts';

const { ceph, rbdBackend, objects } = await rbdFixture();

test('rbd: a cluster that cannot be reached, or that refuses the credentials, leaves init failing with a message naming the monitors', async () => {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-rbd-conf-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const dead = path.join(dir, 'dead.conf');
  fs.writeFileSync(dead, `[global]\nmon_host = 127.0.0.1:${port}\n`);
  const badKey = path.join(dir, 'bad.keyring');
  fs.writeFileSync(badKey, '[client.admin]\n\tkey = AQBNhGxlAAAAABAAtjFhMLuJ0Wqk0uCgUpL0rg==\n');
  const { driver: unreachable } = await rbdBackend({ rbd_ceph_conf: dead, rados_connect_timeout: 2 });
  await assert.rejects(unreachable.init!(), (e: { message: string; retryable: boolean }) =>
    e.message.includes(`monitors 127.0.0.1:${port} (${dead}) could not be reached as client.admin: ETIMEDOUT`) && e.retryable);
  const { driver: refused } = await rbdBackend({ rbd_keyring_conf: badKey, rados_connect_timeout: 5 });
  await assert.rejects(refused.init!(), (e: { message: string; retryable: boolean }) =>
    e.message.includes(`refused the credentials of client.admin (keyring ${badKey}): EACCES`) && e.message.includes(ceph.monitor) && !e.retryable);
});

test('rbd: creates and clones an earlier attempt left half done are completed on retry', async () => {
  const { driver: raw, pool } = await rbdBackend();
  const driver = new GuardedDriver(raw, 60_000);
  await driver.init();
  // An image created by an attempt that stopped before its size was right.
  const v = { id: randomUUID(), sizeGiB: 2 };
  await ceph.rbd('create', '--size', '256M', `${pool}/${RbdDriver.imageName(v.id)}`);
  await driver.createVolume(v);
  const h = await driver.openVolume(v);
  assert.equal(h.sizeBytes, 2 * GiB);
  const data = Buffer.alloc(4096, 0x33);
  await h.write(GiB + 8192, data);
  await h.flush();
  await h.close();
  // A clone attempt that took the source's clone snapshot and stopped.
  const c = { id: randomUUID(), sizeGiB: 3 };
  await ceph.rbd('snap', 'create', `${pool}/${RbdDriver.imageName(v.id)}@${RbdDriver.imageName(c.id)}.clone_snap`);
  await driver.cloneVolume(c, v);
  // One that also made the clone, at the source's size, and stopped before growing it.
  const d = { id: randomUUID(), sizeGiB: 3 };
  const snapD = `${pool}/${RbdDriver.imageName(v.id)}@${RbdDriver.imageName(d.id)}.clone_snap`;
  await ceph.rbd('snap', 'create', snapD);
  await ceph.rbd('snap', 'protect', snapD);
  await ceph.rbd('clone', snapD, `${pool}/${RbdDriver.imageName(d.id)}`);
  await driver.cloneVolume(d, v);
  for (const x of [c, d]) {
    const hx = await driver.openVolume(x);
    assert.equal(hx.sizeBytes, 3 * GiB, 'the clone has its size');
    assert.ok((await hx.read(GiB + 8192, data.length)).equals(data), 'and the source\'s data');
    assert.ok((await hx.read(2 * GiB + 4096, 4096)).equals(Buffer.alloc(4096)), 'and zeros past it');
    await hx.close();
  }
  for (const x of [v, c, d]) await driver.deleteVolume(x);
  assert.deepEqual(await objects(pool), [], 'the source kept for its clones went with the last of them');
});

/**
 * What a kill can leave of a call: the pool's image names (its directory,
 * read without opening them) and the snapshots of `image`. Read through the
 * addon, a few milliseconds a look: the kill lands within one delayed reply of
 * the first change.
 */
async function names(rbd: RbdAddon, cluster: RbdCluster, pool: string, image: string): Promise<string[]> {
  const images = await rbd.listImages(cluster, pool);
  const img = await rbd.openImage(cluster, pool, image, null, true);
  try {
    return [...images, ...(await rbd.snapList(img)).map((x) => `@${x.name}`)].sort();
  } finally {
    await rbd.closeImage(img);
  }
}

/** A client of the test's own (the addon) on the run's cluster, shut down after the test. */
async function addonClient(t: TestContext): Promise<{ rbd: RbdAddon; cluster: RbdCluster }> {
  const rbd = loadRbdAddon();
  const cluster = await rbd.connect(ceph.confPath, ceph.user, ceph.keyringPath, {});
  t.after(() => rbd.shutdown(cluster));
  return { rbd, cluster };
}

// Every reply from the OSD reaches the child up to 300 ms late: its calls take
// seconds, and a kill as soon as the pool shows their first change lands mid-way.
const SLOW_OSD = { ...process.env, CEPH_ARGS: '--ms_inject_delay_type osd --ms_inject_delay_max 0.3 --ms_inject_delay_probability 1' };

/**
 * Runs `job` in a process of its own (driver-child.ts) against a slowed
 * cluster and SIGKILLs it as soon as `reached` says so (polled), else as
 * soon as {@link names} of `image` changes: the call's first change is
 * made, the rest not. Says whether the point was seen, and whether the call
 * had returned all the same (a point that lasts less than a poll is missed).
 */
async function killMidway(t: TestContext, rbd: RbdAddon, cluster: RbdCluster, pool: string, image: string, job: ChildCall, options: Record<string, unknown>, reached?: () => Promise<boolean>): Promise<{ changed: boolean; done: boolean }> {
  const before = JSON.stringify(await names(rbd, cluster, pool, image));
  const at = reached ?? (async () => JSON.stringify(await names(rbd, cluster, pool, image)) !== before);
  const child = path.join(import.meta.dirname, 'driver-child.ts');
  const proc = spawn(process.execPath, ['--import', 'tsx', child, JSON.stringify({ driver: 'rbd', backendName: 'ceph', options, ...job })], { env: SLOW_OSD, stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => { proc.kill('SIGKILL'); });
  let stdout = '';
  proc.stdout.on('data', (b: Buffer) => { stdout += b.toString(); });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  let changed = false;
  while (!changed && proc.exitCode === null) changed = await at();
  proc.kill('SIGKILL');
  await exited;
  return { changed, done: /done/.test(stdout) };
}

/** How often a kill is tried again when it missed a short-lived point (the call went past it between two polls). */
const KILL_TRIES = 5;

test('rbd: a create, a clone, a volume from a snapshot and a snapshot killed (SIGKILL) mid-way are completed on retry', async (t) => {
  const { driver: raw, pool, options } = await rbdBackend();
  const driver = new GuardedDriver(raw, 60_000);
  await driver.init();
  const MiB = 1024 * 1024;
  const src = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(src);
  const data = Buffer.alloc(4 * MiB, 0x6b);
  const h = await driver.openVolume(src);
  await h.write(GiB - data.length, data);
  await h.flush();
  await h.close();
  const snap = { id: randomUUID(), volumeId: src.id, sizeGiB: 1 };
  await driver.createSnapshot(snap);
  const srcImage = RbdDriver.imageName(src.id);
  const { rbd, cluster } = await addonClient(t);
  const cases = [
    { method: 'createVolume' as const, vol: { id: randomUUID(), sizeGiB: 1 } },
    { method: 'cloneVolume' as const, vol: { id: randomUUID(), sizeGiB: 2 }, source: src },
    { method: 'createVolumeFromSnapshot' as const, vol: { id: randomUUID(), sizeGiB: 2 }, snap },
    { method: 'createSnapshot' as const, snap: { id: randomUUID(), volumeId: src.id, sizeGiB: 1 } },
  ];
  for (const job of cases) {
    const kill = await killMidway(t, rbd, cluster, pool, srcImage, job, options);
    assert.ok(kill.changed, `${job.method}: the call had reached the point of the kill`);
    assert.equal(kill.done, false, `${job.method}: the kill came before the call returned`);
    // The retry, as the job's next attempt makes it.
    if (job.method === 'createSnapshot') {
      await driver.createSnapshot(job.snap);
      const check = { id: randomUUID(), sizeGiB: 1 };
      await driver.createVolumeFromSnapshot(check, job.snap);
      const hc = await driver.openVolume(check);
      assert.ok((await hc.read(GiB - data.length, data.length)).equals(data), 'createSnapshot: the retried snapshot holds the data');
      await hc.close();
      await driver.deleteVolume(check);
      await driver.deleteSnapshot(job.snap);
    } else {
      if (job.method === 'createVolume') await driver.createVolume(job.vol);
      if (job.method === 'cloneVolume') await driver.cloneVolume(job.vol, job.source);
      if (job.method === 'createVolumeFromSnapshot') await driver.createVolumeFromSnapshot(job.vol, job.snap);
      const hv = await driver.openVolume(job.vol);
      assert.equal(hv.sizeBytes, job.vol.sizeGiB * GiB, `${job.method}: the retry made it whole, at its size`);
      const expected = job.method === 'createVolume' ? Buffer.alloc(data.length) : data;
      assert.ok((await hv.read(GiB - data.length, data.length)).equals(expected), `${job.method}: with its data`);
      await hv.close();
      await driver.deleteVolume(job.vol);
    }
  }
  await driver.deleteSnapshot(snap);
  await driver.deleteVolume(src);
  assert.deepEqual(await objects(pool), [], 'nothing of the interrupted attempts is left');
});

test('rbd: snapshot and clone deletes killed (SIGKILL) mid-way are completed on retry, nothing left in a trash', async (t) => {
  const { driver: raw, pool, options } = await rbdBackend();
  const driver = new GuardedDriver(raw, 60_000);
  await driver.init();
  const src = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(src);
  const snap = { id: randomUUID(), volumeId: src.id, sizeGiB: 1 };
  await driver.createSnapshot(snap);
  const srcImage = RbdDriver.imageName(src.id);
  const { rbd, cluster } = await addonClient(t);
  const snaps = async (): Promise<Array<{ name: string; namespace: string; trashedName?: string }>> => {
    const img = await rbd.openImage(cluster, pool, srcImage, null, true);
    try {
      return (await rbd.snapList(img)).map(({ name, namespace, trashedName }) => ({ name, namespace, ...(trashedName ? { trashedName } : {}) }));
    } finally {
      await rbd.closeImage(img);
    }
  };

  // rbd_snap_remove moves the snapshot to the image's trash namespace first: killed there, it is
  // out of reach by its name, and the retry removes it by id. (Tried again with another snapshot
  // when the kill came after the removal.)
  let left: Awaited<ReturnType<typeof snaps>> = [];
  for (let attempt = 1, s = snap; attempt <= KILL_TRIES && left.length === 0; attempt++, s = { ...snap, id: randomUUID() }) {
    if (attempt > 1) await driver.createSnapshot(s);
    await killMidway(t, rbd, cluster, pool, srcImage, { method: 'deleteSnapshot', snap: s }, options);
    left = (await snaps()).filter((x) => x.namespace === 'trash');
    t.diagnostic(`after the kill (attempt ${attempt}): ${JSON.stringify(await snaps())}`);
    await driver.deleteSnapshot(s);
    assert.deepEqual((await snaps()).filter((x) => x.trashedName === RbdDriver.snapName(s.id) || x.name === RbdDriver.snapName(s.id)), [], 'the retried delete left nothing of the snapshot');
  }

  // rbd_remove moves the image to the pool's trash first (the trash entry, then out of the
  // directory), then removes it from there; rbd_list2 lists an image in that state, rbd_open
  // does not open it once it left the directory. Killed at each step, the retry completes it.
  const listed = async (name: string): Promise<{ times: number; opens: boolean }> => {
    const times = (await rbd.listImages(cluster, pool)).filter((x) => x === name).length;
    const opens = await rbd.openImage(cluster, pool, name, null, true).then((img) => rbd.closeImage(img).then(() => true), () => false);
    return { times, opens };
  };
  const states: Record<string, { times: number; opens: boolean }> = {};
  const expected = { 'in the trash and the directory': { times: 2, opens: true }, 'in the trash only': { times: 1, opens: false } };
  for (const [step, want] of Object.entries(expected)) {
    // The first step lasts one delayed reply: a kill that missed it is tried again with another clone.
    for (let attempt = 1; attempt <= KILL_TRIES && JSON.stringify(states[step]) !== JSON.stringify(want); attempt++) {
      const clone = { id: randomUUID(), sizeGiB: 1 };
      await driver.cloneVolume(clone, src);
      const image = RbdDriver.imageName(clone.id);
      await killMidway(t, rbd, cluster, pool, srcImage, { method: 'deleteVolume', vol: clone }, options, async () => JSON.stringify(await listed(image)) === JSON.stringify(want));
      states[step] = await listed(image);
      await driver.deleteVolume(clone);
      assert.deepEqual(await listed(image), { times: 0, opens: false }, `${step}: the retried delete removed the image`);
      assert.deepEqual(await snaps(), [], `${step}: and its clone snapshot on the source`);
    }
  }
  t.diagnostic(`the image after the kills: ${JSON.stringify(states)}`);
  // What the kills left, asserted after the retries so that a kill landing elsewhere still checks
  // its retry: the cases this test is for.
  assert.equal(left.length, 1, 'the snapshot delete was killed with the snapshot in the image\'s trash');
  assert.deepEqual(states, expected, 'the volume deletes were killed at each step of the move to the trash');
  await driver.deleteVolume(src);
  assert.deepEqual(await objects(pool), [], 'nothing is left');
});

test('rbd: a snapshot delete killed inside a clone\'s flatten (the clone unregistered, still linked) flattens it on retry: the clone keeps its data', async (t) => {
  const { driver: raw, pool, options } = await rbdBackend();
  const driver = new GuardedDriver(raw, 60_000);
  await driver.init();
  const src = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(src);
  const data = Buffer.alloc(1024 * 1024, 0x5c);
  const h = await driver.openVolume(src);
  await h.write(8 * 1024 * 1024, data);
  await h.flush();
  await h.close();
  const { rbd, cluster } = await addonClient(t);
  const srcImage = RbdDriver.imageName(src.id);
  const registered = async (snapName: string, image: string): Promise<boolean> => {
    const img = await rbd.openImage(cluster, pool, srcImage, snapName, true);
    try {
      return (await rbd.children(img)).some((c) => c.image === image);
    } finally {
      await rbd.closeImage(img);
    }
  };
  const linked = async (image: string): Promise<boolean> => {
    const img = await rbd.openImage(cluster, pool, image, null, true);
    try {
      return (await rbd.parent(img)) !== null;
    } finally {
      await rbd.closeImage(img);
    }
  };
  // librbd's flatten takes the clone out of the snapshot's children, then unlinks it from its
  // parent: the kill comes between the two (each OSD reply is slowed). Tried again with another
  // snapshot when the kill missed that moment.
  let between = false;
  for (let attempt = 1; attempt <= KILL_TRIES && !between; attempt++) {
    const snap = { id: randomUUID(), volumeId: src.id, sizeGiB: 1 };
    await driver.createSnapshot(snap);
    const clone = { id: randomUUID(), sizeGiB: 1 };
    await driver.createVolumeFromSnapshot(clone, snap);
    const image = RbdDriver.imageName(clone.id);
    await killMidway(t, rbd, cluster, pool, srcImage, { method: 'deleteSnapshot', snap }, options, async () => !(await registered(RbdDriver.snapName(snap.id), image)));
    between = await linked(image).catch(() => false);
    t.diagnostic(`attempt ${attempt}: after the kill the clone is ${between ? 'unregistered but still linked' : 'past that point'}`);
    // The job's next attempt.
    await driver.deleteSnapshot(snap);
    const hc = await driver.openVolume(clone);
    assert.ok((await hc.read(8 * 1024 * 1024, data.length)).equals(data), 'the clone opens with its data after the snapshot went');
    await hc.close();
    assert.equal(await linked(image), false, 'flattened');
    await driver.deleteVolume(clone);
  }
  assert.ok(between, 'a kill landed between the flatten\'s two steps');
  await driver.deleteVolume(src);
  assert.deepEqual(await objects(pool), [], 'nothing is left');
});

test('rbd: block I/O and management calls leave the event loop free', async (t) => {
  const { driver: raw } = await rbdBackend();
  const driver = new GuardedDriver(raw, 60_000);
  await driver.init();
  const v = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(v);
  const h = await driver.openVolume(v);
  t.after(() => h.close());
  const MiB = 1024 * 1024;
  const blocks = Array.from({ length: 64 }, (_, i) => Buffer.alloc(MiB, i + 1)); // made before the clock runs
  const clone = { id: randomUUID(), sizeGiB: 1 };
  // Only librbd works while the clock runs: the loop has nothing to do but tick.
  let last = performance.now();
  let worstGapMs = 0;
  let ticks = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    worstGapMs = Math.max(worstGapMs, now - last);
    last = now;
    ticks++;
  }, 5);
  t.after(() => clearInterval(timer));
  const started = performance.now();
  await Promise.all(blocks.map((b, i) => h.write(i * MiB, b)));
  await h.flush();
  const back = await Promise.all(blocks.map((_, i) => h.read(i * MiB, MiB)));
  await driver.cloneVolume(clone, v); // snapshot, protect, clone: calls on threads of the addon's
  const c = await driver.openVolume(clone);
  await c.close();
  await raw.deleteVolume(clone); // flattens nothing; removes the clone and the clone snapshot
  const elapsedMs = performance.now() - started;
  clearInterval(timer);
  back.forEach((b, i) => assert.ok(b.equals(blocks[i]!), `block ${i}`));
  t.diagnostic(`${elapsedMs.toFixed(0)} ms of I/O and clone; timer ticks ${ticks}, worst gap ${worstGapMs.toFixed(1)} ms`);
  // A blocked loop would show a gap as long as a call; a free one ticks all along.
  assert.ok(ticks >= elapsedMs / 50, `the timer ticked all along (${ticks} ticks in ${elapsedMs.toFixed(0)} ms)`);
  assert.ok(worstGapMs < Math.max(200, elapsedMs / 3), `no long stall (worst gap ${worstGapMs.toFixed(0)} ms of ${elapsedMs.toFixed(0)} ms)`);
});

test('rbd: the addon refuses what would crash librbd: a close or shutdown under a running call, a shutdown with images open, a cluster passed as an image', async () => {
  const { loadRbdAddon } = await import('../../src/drivers/rbd/rbd-addon.ts');
  const rbd = loadRbdAddon();
  const pool = await ceph.newPool();
  const cluster = await rbd.connect(ceph.confPath, ceph.user, ceph.keyringPath, {});
  await rbd.createImage(cluster, pool, 'probe', 64 * 1024 * 1024, 61, 22);
  const img = await rbd.openImage(cluster, pool, 'probe', null, false);
  const write = rbd.aioWrite(img, 0, Buffer.alloc(1024 * 1024, 1));
  await assert.rejects(rbd.closeImage(img), (e: { code: string }) => e.code === 'EBUSY', 'a close while a write is in flight');
  await write;
  const stat = rbd.stat(img);
  await assert.rejects(rbd.closeImage(img), (e: { code: string }) => e.code === 'EBUSY', 'a close while a call on another thread uses the image');
  await stat;
  await assert.rejects(rbd.shutdown(cluster), (e: { code: string }) => e.code === 'EBUSY', 'a shutdown while an image is open');
  assert.throws(() => rbd.stat(cluster as never), /not an image/);
  assert.throws(() => rbd.listImages(img as never, pool), /not a cluster/);
  await rbd.closeImage(img);
  await assert.rejects(rbd.aioRead(img, 0, Buffer.alloc(512)), (e: { code: string }) => e.code === 'EBADF', 'I/O on a closed image');
  await assert.rejects(rbd.openImage(cluster, pool, 'missing', null, false), (e: { code: string; errno: number }) => e.code === 'ENOENT' && e.errno === 2);
  await rbd.removeImage(cluster, pool, 'probe');
  const listing = rbd.listImages(cluster, pool);
  await assert.rejects(rbd.shutdown(cluster), (e: { code: string }) => e.code === 'EBUSY', 'a shutdown while a call on another thread uses the cluster');
  await listing;
  await rbd.shutdown(cluster);
});

test('rbd: a pool at its quota fails what would grow it at once with errors naming it, keeps every image, and works again when the quota is lifted', async () => {
  const { driver: raw, pool } = await rbdBackend();
  const driver = new GuardedDriver(raw, 60_000);
  await driver.init();
  const v = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(v);
  const h = await driver.openVolume(v);
  await h.write(0, Buffer.alloc(4096, 0x21));
  await h.flush();
  // An object quota the pool is already past: full without writing gigabytes (the monitor sets
  // the pool's full flag at its next look at the placement groups' stats).
  const flags = async (): Promise<string> => (JSON.parse(await ceph.ceph('osd', 'pool', 'ls', 'detail', '-f', 'json')) as Array<{ pool_name: string; flags_names: string }>)
    .find((p) => p.pool_name === pool)!.flags_names;
  await ceph.ceph('osd', 'pool', 'set-quota', pool, 'max_objects', '1');
  for (const until = Date.now() + 60_000; !(await flags()).includes('full_quota');) {
    assert.ok(Date.now() < until, 'the pool is flagged full');
    await new Promise((r) => setTimeout(r, 100));
  }
  /** `p`, failing the test when it takes 20 s: librados's default is to hold writes to a full pool until there is room. */
  const soon = <T>(p: Promise<T>): Promise<T> => Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('hung on the full pool')), 20_000).unref())]);
  // A write may land in librbd's cache; the flush then says the data has no room. The client
  // learns of the flag from its next OSD map, which may come a moment after the monitor shows it:
  // until then a write to a new object may still pass, so a fresh object is tried for a few seconds.
  let io = 'ok';
  for (let i = 0, until = Date.now() + 10_000; io === 'ok' && Date.now() < until; i++) {
    io = await soon(h.write((8 + 4 * i) * 1024 * 1024, Buffer.alloc(65536, 0x22)).then(() => h.flush()).then(() => 'ok', (e: { code?: string; cause?: { code?: string } }) => e.cause?.code ?? e.code ?? 'no code'));
    if (io === 'ok') await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(io, 'EDQUOT');
  const w = { id: randomUUID(), sizeGiB: 1 };
  await assert.rejects(soon(driver.createVolume(w)), (e: { message: string; retryable: boolean }) =>
    e.message.includes(`Ceph pool ${pool} is at its quota: no room for volume ${w.id}`) && e.retryable);
  await h.close();
  // The OSDs refuse only what grows the pool: overwrites and new snapshots (metadata) pass, but a
  // removal starts by moving the image to the pool's trash, an object this fresh pool does not
  // have yet; librbd then answers ENOENT with the image still there, which is not "gone".
  await assert.rejects(soon(driver.deleteVolume(v)), (e: { message: string; retryable: boolean }) => e.message.includes('could not be removed') && e.retryable);
  assert.ok((await objects(pool)).includes(RbdDriver.imageName(v.id)), 'the image is kept');

  await ceph.ceph('osd', 'pool', 'set-quota', pool, 'max_objects', '0');
  for (const until = Date.now() + 60_000; (await flags()).includes('full');) {
    assert.ok(Date.now() < until, 'the full flag goes');
    await new Promise((r) => setTimeout(r, 100));
  }
  await driver.createVolume(w);
  const again = await driver.openVolume(v);
  assert.ok((await again.read(0, 4096)).equals(Buffer.alloc(4096, 0x21)), 'what was flushed before is intact');
  await again.close();
  for (const x of [v, w]) await driver.deleteVolume(x);
  assert.deepEqual(await objects(pool), [], 'nothing is left');
});

test('rbd: a member that stops answering loses its volume to another: the exclusive lock is broken, the data stays, and when it comes back it is fenced from writing', { timeout: 180_000 }, async (t) => {
  const { driver: raw, pool, options } = await rbdBackend();
  const driver = new GuardedDriver(raw, 120_000);
  await driver.init();
  const v = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(v);
  // Member A, in a process of its own, holds the image's exclusive lock after its first write.
  const a = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'rbd-writer-child.ts'), JSON.stringify({ options, vol: v })], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(() => { a.kill('SIGKILL'); });
  const lines = readline.createInterface({ input: a.stdout! })[Symbol.asyncIterator]();
  assert.equal((await lines.next()).value, 'ready');
  const locker = async (): Promise<string> => JSON.stringify(JSON.parse(await ceph.rbd('lock', 'ls', '--format', 'json', `${pool}/${RbdDriver.imageName(v.id)}`)));
  const held = await locker();
  // A stops (a hung host, a long pause): B takes the volume. librbd asks A for the lock, gets no
  // answer, and once A's watch on the image has expired breaks the lock and blocklists A.
  a.kill('SIGSTOP');
  const started = performance.now();
  const h = await driver.openVolume(v);
  assert.ok((await h.read(0, 4096)).equals(Buffer.alloc(4096, 0xa1)), 'what A flushed is there');
  await h.write(4096, Buffer.alloc(4096, 0xb1));
  await h.flush();
  const tookMs = performance.now() - started;
  assert.notEqual(await locker(), held, 'the lock changed hands');
  // A comes back and writes: the cluster refuses it, and B's view is untouched.
  a.kill('SIGCONT');
  a.stdin!.write('write\n');
  const answer = (await lines.next()).value as string;
  assert.match(answer, /^error E/, `A's write after the takeover: ${answer}`);
  assert.ok((await h.read(0, 8192)).equals(Buffer.concat([Buffer.alloc(4096, 0xa1), Buffer.alloc(4096, 0xb1)])), 'nothing of A\'s landed');
  await h.close();
  t.diagnostic(`takeover took ${tookMs.toFixed(0)} ms; A was answered ${answer}`);
});

/**
 * Runs a removal again while it fails retryably, as its job would (5 attempts): one that meets
 * another removal midway may, never otherwise. The cause (librbd's code) says which step met it.
 */
async function retried(f: () => Promise<void>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await f();
    } catch (err) {
      if (!(err as { retryable?: boolean }).retryable || attempt === 5) throw new Error(`attempt ${attempt}: ${String(err)} (cause: ${String((err as Error).cause)})`, { cause: err });
    }
  }
}

/**
 * `rounds` times: a parent volume and a clone of it made by member `a`, then `remove` (with member
 * `b` on the same pool), after which nothing may be left in the pool.
 */
async function parentsWithClones(rounds: number, remove: (x: { a: GuardedDriver; b: GuardedDriver; parent: VolumeRef; clone: VolumeRef; round: number }) => Promise<void>): Promise<void> {
  const { driver: raw, pool, options } = await rbdBackend();
  const a = new GuardedDriver(raw, 60_000);
  await a.init();
  const other = rbdRegistration.create({ backendName: 'ceph', options: options as never });
  const b = new GuardedDriver(other, 60_000);
  await b.init();
  try {
    for (let round = 0; round < rounds; round++) {
      const parent = { id: randomUUID(), sizeGiB: 1 };
      const clone = { id: randomUUID(), sizeGiB: 1 };
      await a.createVolume(parent);
      await a.cloneVolume(clone, parent);
      await remove({ a, b, parent, clone, round });
      assert.deepEqual(await objects(pool), [], `round ${round}: nothing is left`);
    }
  } finally {
    await other.close?.();
  }
}

test('rbd: a parent with a clone removed by two members at once (a delete job run twice) both succeed; it goes with its clone', async () => {
  await parentsWithClones(8, async ({ a, b, parent, clone }) => {
    await Promise.all([retried(() => a.deleteVolume(parent)), retried(() => b.deleteVolume(parent))]);
    await retried(() => b.deleteVolume(clone));
  });
});

test('rbd: a parent and its last clone removed at the same moment by two members leave neither image nor clone snapshot behind', async () => {
  // The parent's removal renames it `.deleted` while the clone's removal releases its snapshot.
  await parentsWithClones(12, async ({ a, b, parent, clone, round }) => {
    // Either order of the two, and both at once, must end with nothing (a removal that answers succeeded is final).
    const both = [() => retried(() => a.deleteVolume(parent)), () => retried(() => b.deleteVolume(clone))];
    if (round % 3 === 0) await Promise.all(both.map((f) => f()));
    else if (round % 3 === 1) { await both[0]!(); await both[1]!(); }
    else { await both[1]!(); await both[0]!(); }
  });
});
