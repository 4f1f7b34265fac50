/**
 * Snapshot delete (and an admin's `os-force_delete`).
 *
 * | | |
 * | --- | --- |
 * | starts from | {@link SNAPSHOT_DELETABLE_STATUSES}; any status with `force`; not part of a group snapshot; no volume being made from it ({@link refuseIfCopiedFrom}) |
 * | transitional | `deleting` |
 * | ends in | removed (quota given back) |
 * | error | `error_deleting` (action: snapshot delete) |
 * | jobs | `snapshot.delete` v1 (the volume's cluster) |
 * | lock | `snapshot-<id>` |
 */
import type { Tx } from '../../db/index.ts';
import { InvalidStatusError } from '../../errors/index.ts';
import { MESSAGE_ACTIONS } from '../../messages/index.ts';
import { volumeTarget } from '../../services/index.ts';
import { removeSnapshot } from '../lifecycle.ts';
import { operation, payloadParser } from './operation.ts';

/** Statuses from which a snapshot may be deleted. */
export const SNAPSHOT_DELETABLE_STATUSES = ['available', 'error', 'error_deleting'] as const;

/**
 * Refuses to delete a snapshot while a volume is being made from it: the copy
 * would lose its source mid-way (a cascaded volume delete asks too).
 * @throws InvalidStatusError naming the volume being made.
 */
export async function refuseIfCopiedFrom(tx: Tx, snapshotId: string): Promise<void> {
  const copying = await tx.selectFrom('volumes').select('id').where('snapshot_id', '=', snapshotId).where('status', '=', 'creating').executeTakeFirst();
  if (copying) throw new InvalidStatusError(`Invalid snapshot: volume ${copying.id} is being created from snapshot ${snapshotId}.`);
}

/** `snapshot.create` / `snapshot.delete` (target: the volume's cluster). */
export interface SnapshotPayload { snapshotId: string }

/** The snapshot delete operation. */
export const snapshotDelete = operation<'snapshot', SnapshotPayload, { force?: boolean }>().change({
  shape: 'change',
  name: 'snapshot.delete',
  resource: 'snapshot',
  from: SNAPSHOT_DELETABLE_STATUSES,
  transitional: 'deleting',
  to: ['deleted'],
  error: 'error_deleting',
  action: MESSAGE_ACTIONS.SNAPSHOT_DELETE,
  lock: 'snapshot',
  jobs: { main: { kind: 'snapshot.delete', version: 1, minVersion: 1, parse: payloadParser<SnapshotPayload>({ snapshotId: 'string' }) } },
  // A snapshot's deletion does not change its volume: neither busy nor frozen rules apply (as before the table).
  busy: 'none',
  refusedWhenFrozen: false,

  startsFrom: (_ctx, s, input) => (input.force ? [s.status] : SNAPSHOT_DELETABLE_STATUSES),
  refusal: (s) => `Invalid snapshot: Snapshot status must be available or error and must not be part of a group, but current status is: ${s.status}.`,

  async check({ tx }, s) {
    if (s.group_snapshot_id) throw new InvalidStatusError(`Invalid snapshot: Snapshot ${s.id} is part of group snapshot ${s.group_snapshot_id}: delete the group snapshot instead.`);
    await refuseIfCopiedFrom(tx, s.id);
  },

  async request({ tx, deps }, s) {
    const v = (await deps.volumes.get(tx, s.volume_id))!;
    return { job: { target: volumeTarget(v.cluster_name!), payload: { snapshotId: s.id } } };
  },

  run: ({ driver }, s) => driver.deleteSnapshot({ id: s.id, volumeId: s.volume_id }),

  finish: ({ tx, deps, requestId }, s) => removeSnapshot(deps, tx, s, requestId),
});
