/** Snapshot operations and revert through the runtime, without HTTP (issue 12). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidStatusError } from '../../../src/errors/index.ts';
import { ADMIN, CALLER, operationHarness } from './operation-harness.ts';

const snapshotInput = (volumeId: string, force = false) => ({ volumeId, force, name: null, description: null, metadata: {} });

test('snapshot create and delete: creating → available → deleting → gone, with quota', async (t) => {
  const h = await operationHarness(t);
  const v = await h.volume({ size: 2 });
  const s = await h.manager.requestSnapshot(CALLER, snapshotInput(v.id));
  assert.equal(s.status, 'creating');
  assert.deepEqual([(await h.usage()).snapshots, (await h.usage()).gigabytes], [1, 4]);
  await h.runJobs();
  assert.equal((await h.snapshots.get(h.db.kysely, s.id))?.status, 'available');
  await h.manager.requestSnapshotDelete(CALLER, s.id);
  await h.runJobs();
  assert.equal(await h.snapshots.get(h.db.kysely, s.id), undefined);
  assert.deepEqual([(await h.usage()).snapshots, (await h.usage()).gigabytes], [0, 2]);
});

test('snapshot create: an in-use volume needs force; a snapshot being deleted is force-deleted only by admins', async (t) => {
  const h = await operationHarness(t);
  const used = await h.volume({ status: 'in-use' });
  await assert.rejects(h.manager.requestSnapshot(CALLER, snapshotInput(used.id)), /must be available, but current status is: in-use/);
  const s = await h.manager.requestSnapshot(CALLER, snapshotInput(used.id, true));
  await assert.rejects(h.manager.requestSnapshotDelete(CALLER, s.id), InvalidStatusError);
  await h.manager.requestSnapshotDelete(ADMIN, s.id, { force: true });
  await h.runJobs();
  assert.equal(await h.snapshots.get(h.db.kysely, s.id), undefined, 'the create found it deleting and stopped; the delete removed it');
});

test('revert: volume reverting and snapshot restoring, both available after; a failure puts the snapshot back', async (t) => {
  const h = await operationHarness(t);
  const v = await h.volume({ size: 1 });
  const s = await h.manager.requestSnapshot(CALLER, snapshotInput(v.id));
  await h.runJobs();
  await h.manager.requestRevert(CALLER, v.id, s.id, async () => true);
  assert.deepEqual([(await h.volumes.get(h.db.kysely, v.id))?.status, (await h.snapshots.get(h.db.kysely, s.id))?.status], ['reverting', 'restoring']);
  await assert.rejects(h.manager.requestExtend(CALLER, v.id, 2), /must be available/);
  await h.runJobs();
  assert.deepEqual([(await h.volumes.get(h.db.kysely, v.id))?.status, (await h.snapshots.get(h.db.kysely, s.id))?.status], ['available', 'available']);

  await h.driver.deleteSnapshot({ id: s.id }); // the backend lost the snapshot's data: the revert fails
  await h.manager.requestRevert(CALLER, v.id, s.id, async () => true);
  await h.runJobs();
  assert.deepEqual([(await h.volumes.get(h.db.kysely, v.id))?.status, (await h.snapshots.get(h.db.kysely, s.id))?.status], ['error', 'available']);
  assert.deepEqual((await h.messages(v.id)).map((m) => m.action_id), ['021'], 'revert volume to snapshot');
  await assert.rejects(h.manager.requestRevert(CALLER, v.id, s.id, async () => false), /must be available to revert/);
});

test('revert: only to the latest snapshot, on a backend that can', async (t) => {
  const h = await operationHarness(t);
  const v = await h.volume();
  const first = await h.manager.requestSnapshot(CALLER, snapshotInput(v.id));
  await h.runJobs();
  await assert.rejects(h.manager.requestRevert(CALLER, v.id, first.id, async () => false), /cannot revert/);
  const second = await h.manager.requestSnapshot(CALLER, snapshotInput(v.id));
  await h.runJobs();
  assert.ok(second);
  await assert.rejects(h.manager.requestRevert(CALLER, v.id, first.id, async () => true), /not the latest/);
});

test('delete with cascade (issue 13): refused while a volume is being made from one of the snapshots', async (t) => {
  const h = await operationHarness(t);
  const v = await h.volume({ size: 1 });
  const s = await h.manager.requestSnapshot(CALLER, snapshotInput(v.id));
  await h.runJobs();
  const { row: copy } = await h.manager.requestCreate(CALLER, { sizeGiB: 1, name: null, description: null, metadata: {}, availabilityZone: null, volumeType: null, snapshotId: s.id });
  await assert.rejects(h.manager.requestDelete(CALLER, v.id, { cascade: true }), new RegExp(`volume ${copy.id} is being created from snapshot ${s.id}`));
  await assert.rejects(h.manager.requestSnapshotDelete(ADMIN, s.id, { force: true }), InvalidStatusError);
  assert.deepEqual([(await h.volumes.get(h.db.kysely, v.id))?.status, (await h.snapshots.get(h.db.kysely, s.id))?.status], ['available', 'available'], 'nothing changed');
  await h.runJobs();
  assert.equal((await h.volumes.get(h.db.kysely, copy.id))?.status, 'available');
  await h.manager.requestDelete(CALLER, v.id, { cascade: true });
  await h.runJobs();
  assert.equal(await h.snapshots.get(h.db.kysely, s.id), undefined, 'once the copy is made, the cascade goes through');
});

test('create from a snapshot whose row is gone (issue 13): error with a message, and what an earlier attempt left is removed', async (t) => {
  const h = await operationHarness(t);
  const v = await h.volume({ size: 1 });
  const s = await h.manager.requestSnapshot(CALLER, snapshotInput(v.id));
  await h.runJobs();
  const { row: copy } = await h.manager.requestCreate(CALLER, { sizeGiB: 1, name: null, description: null, metadata: {}, availabilityZone: null, volumeType: null, snapshotId: s.id });
  await h.driver.createVolume({ id: copy.id, sizeGiB: 1 }); // an interrupted attempt's half-made copy
  await h.db.kysely.deleteFrom('snapshots').where('id', '=', s.id).execute(); // lost behind the API's back
  await h.runJobs();
  assert.equal((await h.volumes.get(h.db.kysely, copy.id))?.status, 'error');
  assert.deepEqual((await h.messages(copy.id)).map((m) => m.action_id), ['013'], 'create volume');
  assert.equal(await h.hasStorage(copy.id), false, 'no half-made copy is left');
});
