/**
 * Manage and unmanage (issue 12, part 5) through the runtime, without HTTP:
 * the named backend, the quota taken in two steps, a failure's error status
 * with the storage untouched, unmanage keeping the data, and the sweeper's
 * treatment of a stuck `managing`.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { systemClock } from '../../../src/common/index.ts';
import { ServiceRepository } from '../../../src/db/index.ts';
import { InvalidInputError, InvalidStatusError, NotFoundError } from '../../../src/errors/index.ts';
import { ADMIN, CALLER, CLUSTER, operationHarness } from './operation-harness.ts';

const GiB = 1024 ** 3;

/** The harness with the memory backend's volume service registered and reporting its pool. */
async function harness(t: Parameters<typeof operationHarness>[0]) {
  const h = await operationHarness(t);
  const services = new ServiceRepository(systemClock);
  const { row } = await services.register(h.db.kysely, {
    host: CLUSTER, binary: 'cinder-volume', backend: 'memory', cluster: CLUSTER, availabilityZone: 'nova', version: 'test', payloadVersions: {}, instanceId: 'i1',
  });
  await services.heartbeat(h.db.kysely, row.id, { report_version: 1, volume_backend_name: 'memory', vendor_name: 'Basalt', driver_version: '1', storage_protocol: 'nbd', pools: [{ pool_name: 'pool' }] });
  return h;
}

const input = (ref: string, more: Record<string, unknown> = {}) => ({
  host: `${CLUSTER}#pool`, cluster: null, reference: { 'source-name': ref }, name: 'm', description: null, metadata: {},
  availabilityZone: null, volumeType: null, bootable: false, ...more,
});

test('manage: managing → available with the size the backend reports, its quota taken in two steps', async (t) => {
  const h = await harness(t);
  h.memory.unmanaged.set('disk', { sizeBytes: 1.5 * GiB, chunks: new Map([[0, Buffer.from('x')]]) });
  const v = await h.manager.requestManage(ADMIN, input('disk'));
  assert.deepEqual([v.status, v.size, v.host, v.cluster_name], ['managing', 0, `${CLUSTER}#pool`, CLUSTER]);
  assert.deepEqual([(await h.usage()).volumes, (await h.usage()).gigabytes], [1, 0], 'the count in the request');
  await h.runJobs();
  const done = (await h.volumes.get(h.db.kysely, v.id))!;
  assert.deepEqual([done.status, done.size], ['available', 2]);
  assert.equal((await h.usage()).gigabytes, 2, 'the gigabytes once the size is known');
  assert.ok(await h.hasStorage(v.id));
  assert.equal(h.memory.unmanaged.size, 0);
});

test('manage: a reference the backend lacks fails to error_managing with a message, taking no gigabytes', async (t) => {
  const h = await harness(t);
  const v = await h.manager.requestManage(ADMIN, input('nothing'));
  await h.runJobs();
  const failed = (await h.volumes.get(h.db.kysely, v.id))!;
  assert.deepEqual([failed.status, failed.size], ['error_managing', 0]);
  assert.deepEqual((await h.messages(v.id)).map((m) => m.action_id), ['008']);
  assert.equal((await h.usage()).gigabytes, 0);
  // Deleting it removes the row and touches no storage.
  await h.manager.requestDelete(CALLER, v.id);
  await h.runJobs();
  assert.equal(await h.volumes.get(h.db.kysely, v.id), undefined);
  assert.equal((await h.usage()).volumes, 0);
});

test('manage: the backend named must exist, be one of one host or cluster, and have the pool', async (t) => {
  const h = await harness(t);
  await assert.rejects(h.manager.requestManage(ADMIN, input('x', { host: 'other@memory#pool' })), NotFoundError);
  await assert.rejects(h.manager.requestManage(ADMIN, input('x', { host: `${CLUSTER}#nopool` })), InvalidInputError);
  await assert.rejects(h.manager.requestManage(ADMIN, input('x', { host: null, cluster: null })), InvalidInputError);
  await assert.rejects(h.manager.requestManage(ADMIN, input('x', { availabilityZone: 'elsewhere' })), /zone/);
  const byCluster = await h.manager.requestManage(ADMIN, input('x', { host: null, cluster: CLUSTER }));
  assert.equal(byCluster.host, `${CLUSTER}#pool`, 'a cluster gets its first pool');
  assert.equal((await h.usage()).volumes, 1, 'only the accepted request holds quota');
});

test('manage: the sweeper fails a managing volume left with no job', async (t) => {
  const h = await harness(t);
  const v = await h.volume({ status: 'managing', size: 0, withStorage: false });
  const moved = await Promise.all(h.sweepRules.map((r) => r.sweep(Date.now() + 1000)));
  assert.deepEqual(moved, [1, 0]);
  assert.equal((await h.volumes.get(h.db.kysely, v.id))?.status, 'error_managing');
  assert.deepEqual((await h.messages(v.id)).map((m) => m.action_id), ['008']);
});

test('unmanage: unmanaging → gone, quota given back, data kept where manage finds it', async (t) => {
  const h = await harness(t);
  const v = await h.volume({ size: 2 });
  await h.manager.requestUnmanage(ADMIN, v.id);
  assert.equal((await h.volumes.get(h.db.kysely, v.id))?.status, 'unmanaging');
  await h.runJobs();
  assert.equal(await h.volumes.get(h.db.kysely, v.id), undefined);
  assert.deepEqual([(await h.usage()).volumes, (await h.usage()).gigabytes], [0, 0]);
  assert.ok(h.memory.unmanaged.has(`unmanaged-volume-${v.id}`), 'the data is kept');
});

test('unmanage: refused with snapshots, attached, or in a transitional status', async (t) => {
  const h = await harness(t);
  const v = await h.volume();
  await h.manager.requestSnapshot(CALLER, { volumeId: v.id, force: false, name: null, description: null, metadata: {} });
  await h.runJobs();
  await assert.rejects(h.manager.requestUnmanage(ADMIN, v.id), /snapshots/);
  const w = await h.volume();
  await h.attach(w.id, 'attached');
  await assert.rejects(h.manager.requestUnmanage(ADMIN, w.id), InvalidStatusError);
  const x = await h.volume({ status: 'extending' });
  await assert.rejects(h.manager.requestUnmanage(ADMIN, x.id), InvalidStatusError);
});

test('snapshot manage and unmanage keep the snapshot\'s data', async (t) => {
  const h = await harness(t);
  const v = await h.volume();
  const s = await h.manager.requestSnapshot(CALLER, { volumeId: v.id, force: false, name: null, description: null, metadata: {} });
  await h.runJobs();
  await h.manager.requestSnapshotUnmanage(ADMIN, s.id);
  assert.equal((await h.snapshots.get(h.db.kysely, s.id))?.status, 'unmanaging');
  await h.runJobs();
  assert.equal(await h.snapshots.get(h.db.kysely, s.id), undefined);
  assert.equal((await h.usage()).snapshots, 0);
  const back = await h.manager.requestSnapshotManage(ADMIN, { volumeId: v.id, reference: { 'source-name': `unmanaged-snapshot-${s.id}` }, name: 'b', description: null, metadata: {} });
  assert.equal(back.status, 'creating');
  await h.runJobs();
  assert.equal((await h.snapshots.get(h.db.kysely, back.id))?.status, 'available');
  assert.ok(h.memory.snapshots.has(back.id));
  assert.equal((await h.usage()).snapshots, 1);
});

test('manage: over the gigabytes quota fails with the storage left as it was', async (t) => {
  const h = await harness(t);
  h.memory.unmanaged.set('huge', { sizeBytes: 200 * GiB, chunks: new Map() });
  const v = await h.manager.requestManage(ADMIN, input('huge'));
  await h.runJobs();
  assert.equal((await h.volumes.get(h.db.kysely, v.id))?.status, 'error_managing');
  assert.ok(h.memory.unmanaged.has('huge'), 'not adopted');
  assert.equal(await h.hasStorage(v.id), false);
  assert.equal((await h.usage()).gigabytes, 0);
});
