/**
 * The rbd driver's calls killed (SIGKILL) inside librbd, against a real
 * one-node Ceph cluster (rbd-fixture.ts): each call runs in a child process
 * (driver-child.ts) on a slowed cluster, is killed as soon as its first
 * change shows in the pool, and the same call made again must complete it,
 * leaving nothing behind and losing no data. A rename's three writes are
 * too quick to land a kill between, so the state such a kill leaves is made
 * with the `rados` CLI. (The driver's other faults are
 * in rbd-driver-faults.test.ts: the two were one file, too long for the
 * runner's five minutes per file on a busy machine.)
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { GiB, GuardedDriver, RbdDriver } from '../../src/drivers/index.ts';
import { loadRbdAddon, type RbdAddon, type RbdCluster } from '../../src/drivers/rbd/rbd-addon.ts';
import type { ChildCall } from './driver-child.ts';
import { TEST_CLIENT_TIMEOUTS } from '../helpers/ceph.ts';
import { rbdFixture } from './rbd-fixture.ts';

const { ceph, rbdBackend, objects } = await rbdFixture();

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
  const cluster = await rbd.connect(ceph.confPath, ceph.user, ceph.keyringPath, TEST_CLIENT_TIMEOUTS);
  t.after(() => rbd.shutdown(cluster));
  return { rbd, cluster };
}

// Every reply from the OSD reaches the child up to `maxSeconds` late (300 ms by default): its calls take
// seconds, and a kill as soon as the pool shows their first change lands mid-way.
const slowOsd = (maxSeconds: number): NodeJS.ProcessEnv => ({ ...process.env, CEPH_ARGS: `--ms_inject_delay_type osd --ms_inject_delay_max ${maxSeconds} --ms_inject_delay_probability 1` });

/** The longest a call killed mid-way may run in its child without changing the pool: calls here take seconds. */
const CALL_LIMIT_MS = 120_000;

/**
 * Runs `job` in a process of its own (driver-child.ts) against a slowed
 * cluster and SIGKILLs it as soon as `reached` says so (polled), else as
 * soon as {@link names} of `image` changes: the call's first change is
 * made, the rest not. Says whether the point was seen, and whether the call
 * had returned all the same (a point that lasts less than a poll is missed).
 */
async function killMidway(t: TestContext, rbd: RbdAddon, cluster: RbdCluster, pool: string, image: string, job: ChildCall, options: Record<string, unknown>, reached?: () => Promise<boolean>, delayMaxSeconds = 0.3): Promise<{ changed: boolean; done: boolean }> {
  const before = JSON.stringify(await names(rbd, cluster, pool, image));
  const at = reached ?? (async () => JSON.stringify(await names(rbd, cluster, pool, image)) !== before);
  const child = path.join(import.meta.dirname, 'driver-child.ts');
  const proc = spawn(process.execPath, ['--import', 'tsx', child, JSON.stringify({ driver: 'rbd', backendName: 'ceph', options, ...job })], { env: slowOsd(delayMaxSeconds), stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => { proc.kill('SIGKILL'); });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (b: Buffer) => { stdout += b.toString(); });
  proc.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  let changed = false;
  // A call that neither changes the pool nor ends is a failure of its own, reported with what the child said.
  const deadline = Date.now() + CALL_LIMIT_MS;
  while (!changed && proc.exitCode === null) {
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      assert.fail(`${job.method} in its child neither changed ${pool}/${image} nor ended within ${CALL_LIMIT_MS / 1000} s; its output: ${stdout}${stderr}`);
    }
    changed = await at();
  }
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

test('rbd: a rename killed between its writes (a delete\'s `.deleted` mark, an unmanage) is completed by the next attempt, no name of it left behind', async (t) => {
  const { driver: raw, pool } = await rbdBackend();
  const driver = new GuardedDriver(raw, 60_000);
  await driver.init();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-rename-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const idObjects = async (): Promise<string[]> => (await ceph.rados('-p', pool, 'ls')).split('\n').filter((o) => o.startsWith('rbd_id.')).sort();
  /** Writes the id object librbd's rename writes first (`rbd_id.<to>`, a copy of `rbd_id.<from>`), dated `ageSeconds` ago. */
  const idObjectCopy = async (from: string, to: string, ageSeconds: number): Promise<void> => {
    const file = path.join(dir, from);
    await ceph.rados('-p', pool, 'get', `rbd_id.${from}`, file);
    await ceph.rados('-p', pool, 'put', `rbd_id.${to}`, file);
    if (ageSeconds > 0) await ceph.rados('-p', pool, 'touch', `rbd_id.${to}`, String(Math.floor(Date.now() / 1000) - ageSeconds));
  };

  // A parent with a clone: its removal renames it `.deleted`. Killed after the rename's first write,
  // the new name opens but the directory lists the old one, and librbd refuses every later rename (EEXIST).
  const parent = { id: randomUUID(), sizeGiB: 1 };
  const clone = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(parent);
  await driver.cloneVolume(clone, parent);
  const name = RbdDriver.imageName(parent.id);
  await idObjectCopy(name, `${name}.deleted`, 0);
  // Written a moment ago, it may be another member's rename running now: left alone, tried again later.
  await assert.rejects(driver.deleteVolume(parent), (err: Error & { retryable?: boolean }) => /being renamed/.test(err.message) && err.retryable === true);
  assert.ok((await idObjects()).includes(`rbd_id.${name}.deleted`));
  await ceph.rados('-p', pool, 'touch', `rbd_id.${name}.deleted`, String(Math.floor(Date.now() / 1000) - 120));
  await driver.deleteVolume(parent);
  const listed = (await ceph.rbd('ls', pool)).split('\n').filter(Boolean).sort();
  assert.deepEqual(listed, [`${name}.deleted`, RbdDriver.imageName(clone.id)].sort(), 'marked `.deleted`, kept for its clone');
  assert.ok(!(await idObjects()).includes(`rbd_id.${name}`), 'the old name is gone');

  // An unmanage killed after the directory's change, before the old name's id object went: it still opens.
  const u = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(u);
  const uName = RbdDriver.imageName(u.id);
  await ceph.rbd('mv', `${pool}/${uName}`, `${pool}/unmanaged-${uName}`);
  await idObjectCopy(`unmanaged-${uName}`, uName, 0);
  await driver.unmanage!(u);
  assert.ok((await ceph.rbd('ls', pool)).split('\n').includes(`unmanaged-${uName}`));
  assert.ok(!(await idObjects()).includes(`rbd_id.${uName}`), 'the old name is gone');

  await driver.deleteVolume(clone);
  await ceph.rbd('rm', `${pool}/unmanaged-${uName}`);
  assert.deepEqual(await objects(pool), [], 'the parent kept for its clone went with it');
  assert.deepEqual(await idObjects(), [], 'no name is left');
});

/**
 * A parent deleted while its clone lived (kept `.deleted`), then what the
 * clone's removal did before it was killed: the clone removed, then its clone
 * snapshot on the parent dropped.
 */
async function keptParentReleased(): Promise<{ driver: GuardedDriver; pool: string; clone: { id: string; sizeGiB: number }; kept: string }> {
  const { driver: raw, pool } = await rbdBackend();
  const driver = new GuardedDriver(raw, 60_000);
  await driver.init();
  const parent = { id: randomUUID(), sizeGiB: 1 };
  const clone = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(parent);
  await driver.cloneVolume(clone, parent);
  await driver.deleteVolume(parent);
  const kept = `${RbdDriver.imageName(parent.id)}.deleted`;
  assert.ok((await ceph.rbd('ls', pool)).split('\n').includes(kept), 'the parent is kept for its clone');
  const snap = `${pool}/${kept}@${RbdDriver.imageName(clone.id)}.clone_snap`;
  await ceph.rbd('rm', `${pool}/${RbdDriver.imageName(clone.id)}`);
  await ceph.rbd('snap', 'unprotect', snap);
  await ceph.rbd('snap', 'rm', snap);
  return { driver, pool, clone, kept };
}

test('rbd: a clone\'s removal killed after it dropped its deleted parent\'s clone snapshot removes the parent on retry', async () => {
  const { driver, pool, clone } = await keptParentReleased();
  await driver.deleteVolume(clone);
  assert.deepEqual(await objects(pool), [], 'the parent went with its last clone');
});

test('rbd: a clone\'s removal killed inside its deleted parent\'s removal (the header gone, the name still listed) completes it on retry', async () => {
  const { driver, pool, clone, kept } = await keptParentReleased();
  // The kill came next inside the parent's removal, where librbd removes the header before the name.
  const { id } = JSON.parse(await ceph.rbd('info', '--format', 'json', `${pool}/${kept}`)) as { id: string };
  await ceph.rados('-p', pool, 'rm', `rbd_header.${id}`);
  const directory = async (): Promise<string[]> => (await ceph.rbd('ls', pool)).split('\n').filter(Boolean);
  assert.deepEqual(await directory(), [kept], 'the parent is listed');
  await assert.rejects(ceph.rbd('info', `${pool}/${kept}`), /No such file/, 'and does not open');
  await driver.deleteVolume(clone);
  assert.deepEqual(await directory(), [], 'the retry completed the parent\'s removal');
});

test('rbd: a clone\'s removal killed after it removed its deleted parent, before that parent\'s own clone snapshot went, releases it on retry', async (t) => {
  const { driver: raw, pool, options } = await rbdBackend();
  const driver = new GuardedDriver(raw, 60_000);
  await driver.init();
  const { rbd, cluster } = await addonClient(t);
  const root = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(root);
  const rootImage = RbdDriver.imageName(root.id);
  const snaps = async (): Promise<string[]> => {
    const img = await rbd.openImage(cluster, pool, rootImage, null, true);
    try {
      return (await rbd.snapList(img)).map((s) => s.name);
    } finally {
      await rbd.closeImage(img);
    }
  };
  // root ← middle ← leaf, the middle deleted (kept `.deleted` for the leaf); the leaf's removal
  // removes the middle after it, then drops the middle's clone snapshot on root: the kill comes
  // between the two, where the retry, the leaf's, no longer finds the middle by any name.
  let between = false;
  for (let attempt = 1; attempt <= KILL_TRIES && !between; attempt++) {
    const middle = { id: randomUUID(), sizeGiB: 1 };
    const leaf = { id: randomUUID(), sizeGiB: 1 };
    await driver.cloneVolume(middle, root);
    await driver.cloneVolume(leaf, middle);
    await driver.deleteVolume(middle);
    const kept = `${RbdDriver.imageName(middle.id)}.deleted`;
    const cloneSnap = `${RbdDriver.imageName(middle.id)}.clone_snap`;
    assert.ok((await rbd.listImages(cluster, pool)).includes(kept), 'the middle is kept for its clone');
    // The moment lasts a dozen OSD round trips (root opened, its snapshot looked at and dropped): a short delay each is enough.
    await killMidway(t, rbd, cluster, pool, rootImage, { method: 'deleteVolume', vol: leaf }, options, async () => !(await rbd.listImages(cluster, pool)).includes(kept), 0.05);
    between = (await snaps()).includes(cloneSnap);
    t.diagnostic(`attempt ${attempt}: after the kill root's clone snapshot for the removed middle is ${between ? 'still there' : 'gone'}`);
    // The job's next attempt.
    await driver.deleteVolume(leaf);
    assert.deepEqual(await snaps(), [], 'the retry released root\'s clone snapshot for the middle');
  }
  assert.ok(between, 'a kill landed after the middle went and before its clone snapshot did');
  await driver.deleteVolume(root);
  assert.deepEqual(await objects(pool), [], 'nothing is left');
});
