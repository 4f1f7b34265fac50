/**
 * Volume revert to its latest snapshot (3.40).
 *
 * | | |
 * | --- | --- |
 * | starts from | `available`, with the snapshot `available`, the volume's latest, of the same size, on a backend that reverts |
 * | transitional | `reverting` (the snapshot `restoring`) |
 * | ends in | `available` (the snapshot `available`) |
 * | error | `error` (action: revert volume to snapshot); the snapshot back to `available` |
 * | jobs | `volume.revert` v1 |
 * | lock | `volume-<id>` |
 */
import type { Tx } from '../../db/index.ts';
import { InvalidInputError, InvalidStatusError } from '../../errors/index.ts';
import { MESSAGE_ACTIONS } from '../../messages/index.ts';
import { volumeTarget } from '../../services/index.ts';
import { operation, payloadParser } from './operation.ts';

/** `volume.revert`: put the snapshot's data back into the volume (3.40). */
export interface RevertPayload { volumeId: string; snapshotId: string }

/** What a revert request says. */
export interface RevertVolumeInput {
  snapshotId: string;
  /** Whether the backend of `cluster` reverts to snapshots (its service report). */
  backendCanRevert: (tx: Tx, cluster: string) => Promise<boolean>;
}

const volumeRevertFrom = ['available'] as const;

/** The volume revert operation. */
export const volumeRevert = operation<'volume', RevertPayload, RevertVolumeInput>().change({
  shape: 'change',
  name: 'volume.revert',
  resource: 'volume',
  from: volumeRevertFrom,
  transitional: 'reverting',
  to: ['available'],
  error: 'error',
  action: MESSAGE_ACTIONS.REVERT_VOLUME,
  side: { resource: 'snapshot', transitional: 'restoring', error: 'available' },
  lock: 'volume',
  jobs: { main: { kind: 'volume.revert', version: 1, minVersion: 1, parse: payloadParser<RevertPayload>({ volumeId: 'string', snapshotId: 'string' }) } },

  // The snapshot is looked up before the volume's status is judged (as Basalt always did):
  // an unknown or foreign snapshot is refused whatever the volume's status.
  async startsFrom({ tx, caller, look }, v, input) {
    const snap = await look.getSnapshot(caller, input.snapshotId, tx);
    if (snap.volume_id !== v.id) throw new InvalidInputError(`Invalid input received: Snapshot ${input.snapshotId} is not a snapshot of volume ${v.id}.`);
    return volumeRevertFrom;
  },
  refusal: (v) => `Invalid volume: Volume ${v.id} status must be available to revert, but current status is: ${v.status}.`,

  async check({ tx, caller, deps, look }, v, input) {
    const snap = await look.getSnapshot(caller, input.snapshotId, tx);
    if (snap.status !== 'available') throw new InvalidStatusError(`Invalid snapshot: Snapshot ${input.snapshotId} status must be available to revert, but current status is: ${snap.status}.`);
    const all = await deps.snapshots.ofVolume(tx, v.id);
    if (all[all.length - 1]?.id !== snap.id) {
      throw new InvalidInputError(`Invalid input received: Snapshot ${input.snapshotId} is not the latest one of volume ${v.id}; only the latest snapshot can be reverted to.`);
    }
    if (v.size !== snap.volume_size) {
      throw new InvalidInputError(`Invalid input received: Volume ${v.id} size (${v.size} GiB) and snapshot size (${snap.volume_size} GiB) must be equal to revert; create a new volume from the snapshot instead.`);
    }
    if (!(await input.backendCanRevert(tx, v.cluster_name!))) {
      throw new InvalidInputError(`Invalid input received: the backend of volume ${v.id} cannot revert to a snapshot.`);
    }
  },

  async request({ tx, caller, deps }, v, input) {
    await deps.snapshots.transition(tx, { id: input.snapshotId, from: ['available'], to: 'restoring', requestId: caller.requestId });
    return { job: { target: volumeTarget(v.cluster_name!), payload: { volumeId: v.id, snapshotId: input.snapshotId } } };
  },

  async run({ deps, driver }, v, p) {
    const s = await deps.snapshots.get(deps.db.kysely, p.snapshotId);
    if (!s) throw new InvalidStatusError(`Invalid snapshot: Snapshot ${p.snapshotId} to revert volume ${v.id} to is gone.`);
    // Before the data changes: the revert writes past the export's changed-block tracker.
    await deps.exports?.changedBlocks?.markAllChanged(v.id, `revert to snapshot ${s.id}`);
    await driver.revertToSnapshot({ id: v.id, sizeGiB: v.size }, { id: s.id, volumeId: s.volume_id, sizeGiB: s.volume_size });
  },

  async finish({ tx, deps, requestId }, v, p) {
    await deps.volumes.transition(tx, { id: v.id, from: ['reverting'], to: 'available', requestId });
    await deps.snapshots.transition(tx, { id: p.snapshotId, from: ['restoring'], to: 'available', requestId });
  },

  async undo({ tx, deps, requestId }, _v, p) {
    if (p) await deps.snapshots.transition(tx, { id: p.snapshotId, from: ['restoring'], to: 'available', requestId });
  },
});
