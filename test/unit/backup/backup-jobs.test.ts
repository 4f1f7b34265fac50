/**
 * The backup job kinds: names and payload versions are pinned (a rolling
 * upgrade's older readers depend on them, docs/upgrades.md), and a payload
 * this code cannot read fails to parse.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backupJobKinds, BACKUP_RESET_STATUSES, BACKUP_TRANSITIONAL, dataIdOf, settledStatus, type BackupJobDeps } from '../../../src/backup/index.ts';

const kinds = backupJobKinds({} as BackupJobDeps);

test('backup job kinds and versions are pinned', () => {
  assert.deepEqual(Object.values(kinds).map((k) => [k.kind, k.version, k.minVersion, k.resourceType]), [
    ['backup.create', 1, 1, 'backup'], ['backup.restore', 1, 1, 'backup'], ['backup.delete', 1, 1, 'backup'], ['backup.import', 1, 1, 'backup'],
  ]);
});

test('payloads are checked', () => {
  const id = '11111111-2222-4333-8444-555555555555';
  assert.deepEqual(kinds.create.parse({ backupId: id, tempSnapshotId: id, tempVolumeId: id }, 1), { backupId: id, tempSnapshotId: id, tempVolumeId: id });
  assert.throws(() => kinds.create.parse({ backupId: id }, 1), /tempSnapshotId/);
  assert.throws(() => kinds.create.parse({ backupId: id, tempSnapshotId: id, tempVolumeId: id }, 2), /version 2/);
  assert.throws(() => kinds.restore.parse({ backupId: id, volumeId: id, zeroed: 'yes' }, 1), /zeroed/);
  assert.throws(() => kinds.delete.parse(null, 1), /backupId/);
  assert.throws(() => kinds.import.parse({}, 1), /backupId/);
});

test('statuses: transitional ones, reset choices, where a volume goes back', () => {
  assert.deepEqual(Object.fromEntries(Object.entries(BACKUP_TRANSITIONAL).map(([k, v]) => [k, v.error])), { creating: 'error', restoring: 'available', deleting: 'error_deleting' });
  assert.deepEqual([...BACKUP_RESET_STATUSES], ['available', 'error']);
  assert.equal(settledStatus({ attach_status: 'attached' }), 'in-use');
  assert.equal(settledStatus({ attach_status: 'detached' }), 'available');
  assert.equal(dataIdOf({ id: 'a', service_metadata: null }), 'a');
  assert.equal(dataIdOf({ id: 'a', service_metadata: 'b' }), 'b', 'an imported record names the exported backup\'s manifest');
});
