/**
 * Snapshot unmanage (snapshot `os-unmanage`): Basalt forgets the snapshot and
 * its backend keeps the data, under a name a manage request can adopt again
 * (the file driver's `unmanaged-snapshot-<id>`).
 *
 * | | |
 * | --- | --- |
 * | starts from | `available`, `error`; not part of a group snapshot; no volume being made from it |
 * | transitional | `unmanaging` |
 * | ends in | removed (quota given back; the storage kept) |
 * | error | `error_unmanaging` (action: unmanage volume, as Cinder names it) |
 * | jobs | `snapshot.unmanage` v1 (the volume's cluster) |
 * | lock | `snapshot-<id>` |
 */
import { MESSAGE_ACTIONS } from '../../messages/index.ts';
import { volumeTarget } from '../../services/index.ts';
import { removeSnapshot } from '../lifecycle.ts';
import { operation } from './operation.ts';
import { snapshotDelete, type SnapshotPayload } from './snapshot-delete.ts';

/** The snapshot unmanage operation. */
export const snapshotUnmanage = operation<'snapshot', SnapshotPayload, void>().change({
  shape: 'change',
  name: 'snapshot.unmanage',
  resource: 'snapshot',
  from: ['available', 'error'],
  transitional: 'unmanaging',
  to: ['deleted'],
  error: 'error_unmanaging',
  action: MESSAGE_ACTIONS.UNMANAGE_VOLUME,
  lock: 'snapshot',
  jobs: { main: { kind: 'snapshot.unmanage', version: 1, minVersion: 1, parse: snapshotDelete.jobs.main.parse } },
  // Forgetting a snapshot does not change its volume (as a snapshot delete).
  busy: 'none',
  refusedWhenFrozen: false,

  refusal: (s) => `Invalid snapshot: Snapshot status must be available or error to unmanage, but current status is: ${s.status}.`,

  check: (ctx, s) => snapshotDelete.check(ctx, s),

  async request({ tx, deps }, s) {
    const v = (await deps.volumes.get(tx, s.volume_id))!;
    return { job: { target: volumeTarget(v.cluster_name!), payload: { snapshotId: s.id } } };
  },

  run: ({ driver }, s) => driver.unmanageSnapshot({ id: s.id }),

  finish: ({ tx, deps, requestId }, s) => removeSnapshot(deps, tx, s, requestId, 'unmanaging'),
});
