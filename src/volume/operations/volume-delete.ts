/**
 * Volume delete (and `os-force_delete`, and `cascade` with its snapshots).
 * Destroys data last: the request refuses while a host is attached and
 * releases every row that refers to the volume; the volume service checks
 * again under the lock before the storage goes, and the row goes with the job.
 *
 * | | |
 * | --- | --- |
 * | starts from | {@link DELETABLE_STATUSES}; any status with `force` (admin); never attached; with `cascade`, no volume being made from one of its snapshots |
 * | transitional | `deleting` (its cascaded snapshots `deleting` too) |
 * | ends in | removed (quota given back); a volume never placed is removed at once |
 * | error | `error_deleting` (action: delete volume); its cascaded snapshots `error_deleting` |
 * | jobs | `volume.delete` v2 (v1 from release N-1: no `snapshotIds`) |
 * | lock | `volume-<id>` (and `snapshot-<id>` of each cascaded snapshot) |
 */
import { InvalidStatusError } from '../../errors/index.ts';
import { MESSAGE_ACTIONS } from '../../messages/index.ts';
import { volumeTarget } from '../../services/index.ts';
import { removeSnapshot, removeVolume } from '../lifecycle.ts';
import { refuseIfAttached, releaseVolumeReferences } from '../volume-references.ts';
import { operation, payloadParser } from './operation.ts';
import { failRow } from './runtime.ts';
import { refuseIfCopiedFrom, SNAPSHOT_DELETABLE_STATUSES, snapshotDelete } from './snapshot-delete.ts';
import { detailArgsFor, detailFor } from '../../messages/index.ts';

/** Statuses from which a volume may be deleted without `force` (Cinder's list). */
export const DELETABLE_STATUSES = ['available', 'error', 'error_restoring', 'error_extending', 'error_managing'] as const;

/**
 * `volume.delete`: remove the volume (and, for cascade, its snapshots) from
 * its backend, then the rows. v2 names the cascaded snapshots; a v1 payload
 * (from release N-1) leaves them to be inferred from their `deleting` status.
 */
export interface DeletePayload { volumeId: string; snapshotIds?: string[] }

/** What a delete request says. */
export interface DeleteVolumeInput { force?: boolean; cascade?: boolean }

/** The volume delete operation. */
export const volumeDelete = operation<'volume', DeletePayload, DeleteVolumeInput>().change({
  shape: 'change',
  name: 'volume.delete',
  resource: 'volume',
  from: DELETABLE_STATUSES,
  transitional: 'deleting',
  to: ['deleted'],
  error: 'error_deleting',
  action: MESSAGE_ACTIONS.DELETE_VOLUME,
  lock: 'volume',
  jobs: {
    main: {
      kind: 'volume.delete', version: 2, minVersion: 1,
      parse: (payload, version) => {
        const p = payloadParser<DeletePayload>({ volumeId: 'string' }, [1, 2])(payload, version);
        if (version >= 2 && !(Array.isArray(p.snapshotIds) && p.snapshotIds.every((x) => typeof x === 'string'))) {
          throw new Error('payload field snapshotIds must be a list of ids');
        }
        return version >= 2 ? p : { volumeId: p.volumeId };
      },
      encode: (p, version) => (version >= 2 ? p : { volumeId: p.volumeId }),
    },
  },

  startsFrom: (_ctx, v, input) => (input.force ? [v.status] : DELETABLE_STATUSES),
  refusal: (_v, allowed) => `Invalid volume: Volume status must be ${allowed.join(', ')} and must not be migrating, attached, belong to a group, have snapshots or be disassociated from snapshots after volume transfer.`,

  async check({ tx }, v, input) {
    if (v.attach_status === 'attached') throw new InvalidStatusError(volumeDelete.refusal(v, input.force ? [v.status] : DELETABLE_STATUSES));
    if (v.group_id) throw new InvalidStatusError(`Invalid volume: Volume ${v.id} belongs to group ${v.group_id}: remove it from the group first, or delete the group with its volumes.`);
    await refuseIfAttached(tx, v.id);
  },

  async request({ tx, caller, enqueue, deps }, v, input) {
    const snaps = await deps.snapshots.ofVolume(tx, v.id);
    const grouped = snaps.find((s) => s.group_snapshot_id);
    if (grouped) throw new InvalidStatusError(`Invalid volume: Snapshot ${grouped.id} of volume ${v.id} is part of group snapshot ${grouped.group_snapshot_id}: delete the group snapshot first.`);
    if (snaps.length > 0 && !input.cascade) throw new InvalidStatusError(`Invalid volume: Volume ${v.id} still has ${snaps.length} dependent snapshots.`);
    for (const s of snaps) {
      await refuseIfCopiedFrom(tx, s.id);
      if (!(await deps.snapshots.transition(tx, { id: s.id, from: SNAPSHOT_DELETABLE_STATUSES, to: 'deleting', requestId: caller.requestId }))) {
        throw new InvalidStatusError(`Invalid volume: Snapshot ${s.id} of the volume is ${s.status} and cannot be deleted.`);
      }
    }
    // Destroy data last: what refers to the volume goes first, in this transaction.
    await releaseVolumeReferences(deps, tx, enqueue, v, caller.requestId);
    if (v.cluster_name === null) {
      // Never reached a backend (failed scheduling): nothing to delete but the row (and its key).
      return {
        after: async () => {
          if (v.encryption_key_id) await deps.keys.deleteKey({ projectId: v.project_id }, v.encryption_key_id);
          await removeVolume(deps, tx, { ...v, status: 'deleting' }, caller.requestId);
        },
      };
    }
    return { job: { target: volumeTarget(v.cluster_name), payload: { volumeId: v.id, snapshotIds: snaps.map((s) => s.id) } } };
  },

  // Storage goes only once nothing can keep the row (an admin's reset may have let the delete past an attachment).
  prepare: (tx, v) => refuseIfAttached(tx, v.id),

  async run({ deps, driver, job, locked }, v, p) {
    // Cascade: v2 names the snapshots deleted with the volume; a v1 payload
    // (release N-1) means those moved to deleting with it.
    for (const s of await deps.snapshots.ofVolume(deps.db.kysely, v.id)) {
      if (s.status !== 'deleting' || (p.snapshotIds && !p.snapshotIds.includes(s.id))) continue;
      await locked(`snapshot-${s.id}`, () => driver.deleteSnapshot({ id: s.id, volumeId: s.volume_id }));
      await deps.db.kysely.transaction().execute((tx) => removeSnapshot(deps, tx, s, job.job.request_id));
    }
    await driver.deleteVolume({ id: v.id });
    await deps.exports?.changedBlocks?.forget(v.id);
    // Idempotent: a key already deleted counts as deleted when the job runs again.
    if (v.encryption_key_id) await deps.keys.deleteKey({ projectId: v.project_id }, v.encryption_key_id);
  },

  async finish({ tx, enqueue, deps, requestId }, v) {
    await deps.db.lockRows(tx, 'volumes', [v.id]);
    await releaseVolumeReferences(deps, tx, enqueue, v, requestId);
    await removeVolume(deps, tx, v, requestId);
  },

  async undo({ tx, deps, requestId, error }, v, p) {
    if (!p || !error) return;
    for (const s of await deps.snapshots.ofVolume(tx, v.id)) {
      if (s.status === 'deleting') {
        await failRow(deps, tx, 'snapshot', s.id, 'deleting', { error: snapshotDelete.error, action: snapshotDelete.action }, detailFor(error), requestId, detailArgsFor(error));
      }
    }
  },
});
