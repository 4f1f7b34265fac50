/** The operation table's declarations (issue 12): statuses, reset choices and job kinds derive from it. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  OPERATIONS, SNAPSHOT_RESET_STATUSES, SNAPSHOT_TRANSITIONAL, transitionalStatuses, VOLUME_RESET_STATUSES, VOLUME_TRANSITIONAL, volumeHandlers, volumeJobKinds,
  type Operation,
} from '../../../src/volume/index.ts';

test('each transitional status has one error status and one message action', () => {
  assert.deepEqual(Object.fromEntries(Object.entries(VOLUME_TRANSITIONAL).map(([s, t]) => [s, [t.error, t.action.text, t.operation.name]])), {
    creating: ['error', 'create volume', 'volume.create'],
    deleting: ['error_deleting', 'delete volume', 'volume.delete'],
    extending: ['error_extending', 'extend volume', 'volume.extend'],
    reverting: ['error', 'revert volume to snapshot', 'volume.revert'],
    maintenance: ['available', 'migrate volume', 'volume.migrate'],
    managing: ['error_managing', 'create volume from backend storage', 'volume.manage'],
    unmanaging: ['error_unmanaging', 'unmanage volume', 'volume.unmanage'],
  });
  assert.deepEqual(Object.fromEntries(Object.entries(SNAPSHOT_TRANSITIONAL).map(([s, t]) => [s, [t.error, t.action.text, t.operation.name]])), {
    creating: ['error', 'snapshot create', 'snapshot.create'],
    deleting: ['error_deleting', 'snapshot delete', 'snapshot.delete'],
    restoring: ['available', 'revert volume to snapshot', 'volume.revert'],
    unmanaging: ['error_unmanaging', 'unmanage volume', 'snapshot.unmanage'],
  });
  assert.doesNotThrow(() => transitionalStatuses('volume'));
});

test('os-reset_status offers Cinder\'s lists, derived from the table', () => {
  assert.deepEqual(VOLUME_RESET_STATUSES, ['creating', 'available', 'deleting', 'error', 'error_deleting', 'error_managing', 'managing', 'attaching', 'in-use', 'detaching', 'maintenance', 'reserved', 'error_extending', 'extending']);
  assert.deepEqual(SNAPSHOT_RESET_STATUSES, ['creating', 'available', 'deleting', 'error', 'error_deleting']);
});

test('job kinds keep their names and payload versions (the rolling-upgrade test pins them)', () => {
  const kinds = volumeJobKinds({} as never);
  assert.deepEqual(Object.values(kinds).map((k) => [k.kind, k.version, k.minVersion, k.resourceType]), [
    ['volume.schedule', 1, 1, 'volume'], ['volume.create', 1, 1, 'volume'], ['volume.extend', 1, 1, 'volume'], ['volume.delete', 2, 1, 'volume'],
    ['volume.revert', 1, 1, 'volume'], ['volume.migrate', 2, 1, 'volume'], ['volume.migrate_cleanup', 1, 1, 'volume'],
    ['snapshot.create', 1, 1, 'snapshot'], ['snapshot.delete', 1, 1, 'snapshot'],
    ['volume.manage', 1, 1, 'volume'], ['volume.unmanage', 1, 1, 'volume'], ['snapshot.manage', 1, 1, 'snapshot'], ['snapshot.unmanage', 1, 1, 'snapshot'],
    ['export.fence', 1, 1, 'attachment'],
  ]);
  // A v1 delete (release N-1) reads without the snapshot list, and is written without it for such readers.
  assert.deepEqual(kinds.delete.parse({ volumeId: 'v' }, 1), { volumeId: 'v' });
  assert.deepEqual(kinds.delete.encode!({ volumeId: 'v', snapshotIds: ['s'] }, 1), { volumeId: 'v' });
  assert.throws(() => kinds.delete.parse({ volumeId: 'v' }, 2), /snapshotIds/);
  // A v1 move (release N-1) ran in one process: no export; a v2 one is written without it for such readers.
  const move = { volumeId: 'v', sourceCluster: 'a', destHost: 'h@b#p', destCluster: 'h@b', newTypeId: null };
  assert.deepEqual(kinds.migrate.parse(move, 1), { ...move, sourceExport: null });
  assert.deepEqual(kinds.migrate.encode!({ ...move, sourceExport: 'basalt-move-x' }, 1), move);
  assert.throws(() => kinds.extend.parse({ volumeId: 'v' }, 1), /newSizeGiB/);
});

test('every operation declares consistent statuses', () => {
  const names = new Set<string>();
  for (const op of OPERATIONS as readonly Operation[]) {
    assert.ok(!names.has(op.name), `${op.name} is declared once`);
    names.add(op.name);
    assert.ok(op.to.length > 0, `${op.name} ends somewhere`);
    if (op.transitional) {
      assert.ok(op.error && op.action, `${op.name}: a transitional status needs an error status and an action`);
      assert.ok(op.jobs?.main, `${op.name}: a transitional status needs a job to end it`);
    }
    if (op.shape === 'status') assert.equal(op.transitional, null, `${op.name}: a status change takes effect at once`);
  }
});

test('every job of the table is a registered kind, and every backend job has a handler', () => {
  const kinds = new Set(Object.values(volumeJobKinds({} as never)).map((k) => k.kind));
  for (const op of OPERATIONS as readonly Operation[]) {
    for (const schema of Object.values(op.jobs ?? {})) assert.ok(kinds.has(schema.kind), `${op.name}: ${schema.kind} is registered`);
  }
  const handled = volumeHandlers({ kinds: volumeJobKinds({} as never) } as never, {} as never).map((h) => h.kind.kind).sort();
  assert.deepEqual(handled, [
    'export.fence', 'snapshot.create', 'snapshot.delete', 'snapshot.manage', 'snapshot.unmanage',
    'volume.create', 'volume.delete', 'volume.extend', 'volume.manage', 'volume.migrate', 'volume.migrate_cleanup', 'volume.revert', 'volume.unmanage',
  ]);
});
