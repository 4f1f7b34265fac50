/**
 * Volume operations' state rules through the runtime, without HTTP: the
 * request's status, busy and reference checks, the job's run and finish, a
 * failure's error status, user message and quota give-back, and the sweeper's
 * treatment of a stuck transitional status.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidInputError, InvalidStatusError } from '../../../src/errors/index.ts';
import { ADMIN, CALLER, CLUSTER, operationHarness } from './operation-harness.ts';

test('delete: available → deleting → gone, storage last and quota given back', async (t) => {
  const h = await operationHarness(t);
  const v = await h.volume({ size: 2 });
  assert.equal((await h.usage()).gigabytes, 2);
  await h.manager.requestDelete(CALLER, v.id);
  assert.equal((await h.volumes.get(h.db.kysely, v.id))?.status, 'deleting');
  const [job] = await h.queued();
  assert.deepEqual([job?.kind, job?.target, job?.payload_version, JSON.parse(job!.payload)], ['volume.delete', `volume:${CLUSTER}`, 2, { volumeId: v.id, snapshotIds: [] }]);
  await h.runJobs();
  assert.equal(await h.volumes.get(h.db.kysely, v.id), undefined);
  assert.equal(await h.hasStorage(v.id), false);
  assert.deepEqual([(await h.usage()).volumes, (await h.usage()).gigabytes], [0, 0]);
});

test('delete: refused from a transitional status unless an admin forces it', async (t) => {
  const h = await operationHarness(t);
  const v = await h.volume({ status: 'extending' });
  await assert.rejects(h.manager.requestDelete(CALLER, v.id), InvalidStatusError);
  await h.manager.requestDelete(ADMIN, v.id, { force: true });
  await h.runJobs();
  assert.equal(await h.volumes.get(h.db.kysely, v.id), undefined);
});

test('delete (issue 12): a volume with an attached host is refused and keeps its data, whatever its status says', async (t) => {
  const h = await operationHarness(t);
  const v = await h.volume();
  await h.attach(v.id, 'attached');
  await assert.rejects(h.manager.requestDelete(ADMIN, v.id, { force: true }), /attach/);
  assert.equal((await h.volumes.get(h.db.kysely, v.id))?.status, 'available');
  assert.ok(await h.hasStorage(v.id));
});

test('delete (issue 12): a reserved attachment and a transfer offer are released with the volume', async (t) => {
  const h = await operationHarness(t);
  const v = await h.volume();
  const a = await h.attach(v.id, 'reserved');
  await h.db.kysely.insertInto('transfers').values({ id: 'tr-1', volume_id: v.id, project_id: CALLER.projectId, name: null, salt: 's', key_hash: 'k', no_snapshots: 0, created_at: '2026-01-01T00:00:00Z' }).execute();
  await h.manager.requestDelete(CALLER, v.id);
  assert.equal(await h.attachments.get(h.db.kysely, a, 'all'), undefined, 'released in the request');
  assert.equal(await h.db.kysely.selectFrom('transfers').select('id').where('volume_id', '=', v.id).executeTakeFirst(), undefined);
  await h.runJobs();
  assert.equal(await h.volumes.get(h.db.kysely, v.id), undefined);
  assert.equal(await h.hasStorage(v.id), false);
});

test('delete (issue 12): a host attached after the request stops the job before the storage goes', async (t) => {
  const h = await operationHarness(t);
  const v = await h.volume({ size: 3 });
  await h.manager.requestDelete(CALLER, v.id);
  await h.attach(v.id, 'attached'); // e.g. an admin's reset let an attach through meanwhile
  await h.runJobs();
  const after = await h.volumes.get(h.db.kysely, v.id);
  assert.equal(after?.status, 'error_deleting');
  assert.ok(await h.hasStorage(v.id), 'the data is still there');
  assert.equal((await h.usage()).gigabytes, 3, 'the volume still counts');
  assert.deepEqual((await h.messages(v.id)).map((m) => m.action_id), ['016'], 'one message: delete volume');
});

test('extend: grows the volume and its quota; a failure ends in error_extending with a message and the quota back', async (t) => {
  const h = await operationHarness(t);
  const v = await h.volume({ size: 1 });
  await h.manager.requestExtend(CALLER, v.id, 3);
  assert.equal((await h.usage()).gigabytes, 3, 'taken in the request');
  await h.runJobs();
  assert.deepEqual([(await h.volumes.get(h.db.kysely, v.id))?.status, (await h.volumes.get(h.db.kysely, v.id))?.size], ['available', 3]);

  const lost = await h.volume({ size: 1, withStorage: false }); // the backend lost it: the driver fails
  await h.manager.requestExtend(CALLER, lost.id, 5);
  assert.equal((await h.usage()).gigabytes, 8);
  await h.runJobs();
  assert.equal((await h.volumes.get(h.db.kysely, lost.id))?.status, 'error_extending');
  assert.equal((await h.usage()).gigabytes, 4, 'the 4 GiB the request took are given back');
  assert.equal((await h.messages(lost.id)).length, 1);
});

test('extend: refused when not larger, when in-use without online extend, and while a snapshot is being taken (busy)', async (t) => {
  const h = await operationHarness(t);
  const v = await h.volume({ size: 2 });
  await assert.rejects(h.manager.requestExtend(CALLER, v.id, 2), InvalidInputError);
  const used = await h.volume({ status: 'in-use' });
  await assert.rejects(h.manager.requestExtend(CALLER, used.id, 4), /must be available to extend/);
  await assert.rejects(h.manager.requestExtend(CALLER, used.id, 4, { inUseAllowed: async () => false }), /or in-use on a backend that extends online/);
  await h.attach(used.id, 'attached');
  await h.manager.requestExtend(CALLER, used.id, 4, { inUseAllowed: async () => true });
  await h.runJobs();
  assert.deepEqual([(await h.volumes.get(h.db.kysely, used.id))?.status, (await h.volumes.get(h.db.kysely, used.id))?.size], ['in-use', 4], 'back to in-use: still attached');
  await h.snapshots.insert(h.db.kysely, {
    id: 's-busy', project_id: CALLER.projectId, user_id: CALLER.userId, volume_id: v.id, volume_size: 2, volume_type_id: null, name: null, description: null,
    status: 'creating', encryption_key_id: null, created_at: '2026-01-01T00:00:00.000Z', updated_at: null, group_snapshot_id: null, progress: null,
  }, {});
  await assert.rejects(h.manager.requestExtend(CALLER, v.id, 3), /is busy: snapshot s-busy is creating/);
});

test('sweeper: a volume stuck in extending with no job is failed and its gigabytes recounted', async (t) => {
  const h = await operationHarness(t);
  const v = await h.volume({ size: 2, status: 'extending', updated_at: '2000-01-01T00:00:00.000Z' });
  await h.quotas.consume(h.db.kysely, CALLER.projectId, { gigabytes: 5 });
  const moved = await Promise.all(h.sweepRules.map((r) => r.sweep(Date.now())));
  assert.deepEqual(moved, [1, 0]);
  assert.equal((await h.volumes.get(h.db.kysely, v.id))?.status, 'error_extending');
  assert.equal((await h.usage()).gigabytes, 2, 'recounted from the rows');
  assert.equal((await h.messages(v.id))[0]?.detail_id, '012', 'the interrupted message');
});

test('retype in place: status rules come from the table', async (t) => {
  const h = await operationHarness(t);
  const v = await h.volume({ status: 'extending' });
  await assert.rejects(h.manager.requestRetype(CALLER, v.id, '__DEFAULT__', 'never'), /must be available or in-use to retype/);
});

test('create: an empty volume is scheduled; a clone goes to its source\'s backend and is made there', async (t) => {
  const h = await operationHarness(t);
  const { row: empty } = await h.manager.requestCreate(CALLER, { sizeGiB: 1, name: null, description: null, metadata: {}, availabilityZone: null, volumeType: null });
  assert.equal(empty.status, 'creating');
  const source = await h.volume({ size: 2 });
  const { row: clone } = await h.manager.requestCreate(CALLER, { sizeGiB: 2, name: 'c', description: null, metadata: {}, availabilityZone: null, volumeType: null, sourceVolumeId: source.id });
  const jobs = await h.queued();
  assert.deepEqual(jobs.map((j) => [j.kind, j.target, j.resource_id]), [['volume.schedule', 'scheduler', empty.id], ['volume.create', `volume:${CLUSTER}`, clone.id]]);
  await h.runJobs();
  assert.equal((await h.volumes.get(h.db.kysely, clone.id))?.status, 'available');
  assert.ok(await h.hasStorage(clone.id));
  await assert.rejects(h.manager.requestCreate(CALLER, { sizeGiB: 1, name: null, description: null, metadata: {}, availabilityZone: null, volumeType: null, sourceVolumeId: source.id }), /cannot be smaller/);
});
