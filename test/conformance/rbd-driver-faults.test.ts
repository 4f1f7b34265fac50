/**
 * The rbd driver and its addon under faults, against a real one-node Ceph
 * cluster (rbd-fixture.ts): a cluster it cannot reach or that refuses its
 * credentials, calls left half done and completed on retry (those killed
 * inside librbd: rbd-driver-kills.test.ts), the event loop kept free while
 * librbd works, what the addon refuses rather than crash, a pool at its
 * quota, and a member
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
import { after, test } from 'node:test';
import { GiB, GuardedDriver, RbdDriver, rbdRegistration, type VolumeRef } from '../../src/drivers/index.ts';
import { freePort } from '../helpers/net.ts';
import { TEST_CLIENT_TIMEOUTS } from '../helpers/ceph.ts';
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
  const cluster = await rbd.connect(ceph.confPath, ceph.user, ceph.keyringPath, TEST_CLIENT_TIMEOUTS);
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
