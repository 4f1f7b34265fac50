/**
 * Volume unmanage (`os-unmanage`): Basalt forgets the volume and its backend
 * keeps the data, under a name a manage request can adopt again (the file
 * driver's `unmanaged-volume-<id>`). Like a delete it releases what refers to
 * the volume first, and its row goes with the job; unlike a delete no storage
 * is destroyed.
 *
 * | | |
 * | --- | --- |
 * | starts from | {@link DELETABLE_STATUSES}; never attached, no snapshots, no group, not encrypted (its key would be lost) |
 * | transitional | `unmanaging` |
 * | ends in | removed (quota given back; the storage kept) |
 * | error | `error_unmanaging` (action: unmanage volume) |
 * | jobs | `volume.unmanage` v1 (the volume's cluster) |
 * | lock | `volume-<id>` |
 */
import { InvalidInputError, InvalidStatusError } from '../../errors/index.ts';
import { MESSAGE_ACTIONS } from '../../messages/index.ts';
import { volumeTarget } from '../../services/index.ts';
import { removeVolume } from '../lifecycle.ts';
import { refuseIfAttached, releaseVolumeReferences } from '../volume-references.ts';
import { operation, payloadParser } from './operation.ts';
import { DELETABLE_STATUSES } from './volume-delete.ts';

/** `volume.unmanage`: forget the volume, keep its data. */
export interface UnmanagePayload { volumeId: string }

/** The volume unmanage operation. */
export const volumeUnmanage = operation<'volume', UnmanagePayload, void>().change({
  shape: 'change',
  name: 'volume.unmanage',
  resource: 'volume',
  from: DELETABLE_STATUSES,
  transitional: 'unmanaging',
  to: ['deleted'],
  error: 'error_unmanaging',
  action: MESSAGE_ACTIONS.UNMANAGE_VOLUME,
  lock: 'volume',
  jobs: { main: { kind: 'volume.unmanage', version: 1, minVersion: 1, parse: payloadParser<UnmanagePayload>({ volumeId: 'string' }) } },

  refusal: (v, allowed) => `Invalid volume: Volume ${v.id} status must be ${allowed.join(', ')} to unmanage, but current status is: ${v.status}.`,

  async check({ tx, deps }, v) {
    if (v.attach_status === 'attached') throw new InvalidStatusError(`Invalid volume: Volume ${v.id} is attached; detach it before unmanaging it.`);
    await refuseIfAttached(tx, v.id);
    if (v.group_id) throw new InvalidStatusError(`Invalid volume: Volume ${v.id} belongs to group ${v.group_id}: remove it from the group first.`);
    if (v.encryption_key_id) throw new InvalidInputError(`Invalid input received: Volume ${v.id} is encrypted: unmanaging it would lose its key.`);
    const snaps = await deps.snapshots.ofVolume(tx, v.id);
    if (snaps.length > 0) throw new InvalidStatusError(`Invalid volume: Volume ${v.id} still has ${snaps.length} dependent snapshots.`);
  },

  async request({ tx, caller, enqueue, deps }, v) {
    if (v.cluster_name === null) throw new InvalidStatusError(`Invalid volume: Volume ${v.id} never reached a backend: there is nothing to unmanage; delete it.`);
    // What refers to the volume goes first, in this transaction.
    await releaseVolumeReferences(deps, tx, enqueue, v, caller.requestId);
    return { job: { target: volumeTarget(v.cluster_name), payload: { volumeId: v.id } } };
  },

  prepare: (tx, v) => refuseIfAttached(tx, v.id),

  async run({ deps, driver }, v) {
    await driver.unmanage({ id: v.id });
    // Basalt forgets the volume: a later manage makes a new one, whose history starts then.
    await deps.exports?.changedBlocks?.forget(v.id);
  },

  async finish({ tx, enqueue, deps, requestId }, v) {
    await deps.db.lockRows(tx, 'volumes', [v.id]);
    await releaseVolumeReferences(deps, tx, enqueue, v, requestId);
    await removeVolume(deps, tx, v, requestId, 'unmanaging');
  },
});
