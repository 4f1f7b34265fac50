/**
 * Volume extend (`os-extend`; in-use volumes from 3.42 where the backend extends online).
 *
 * | | |
 * | --- | --- |
 * | starts from | `available`; `in-use` when the request allows it and the backend can |
 * | transitional | `extending` |
 * | ends in | `available`, or `in-use` when attachments remain |
 * | error | `error_extending` (action: extend volume); the quota taken is given back |
 * | jobs | `volume.extend` v1 |
 * | lock | `volume-<id>` |
 * | afterwards | an in-use volume's instances get Nova's `volume-extended` (`src/events`, when `[nova]` is set) |
 */
import type { Tx } from '../../db/index.ts';
import { InvalidInputError } from '../../errors/index.ts';
import { MESSAGE_ACTIONS } from '../../messages/index.ts';
import { volumeTarget } from '../../services/index.ts';
import { typeNameOf, volumeQuota } from '../volume-quota.ts';
import { operation, payloadParser } from './operation.ts';

/** `volume.extend`: grow the volume to `newSizeGiB`. */
export interface ExtendPayload { volumeId: string; newSizeGiB: number }

/** What an extend request says. */
export interface ExtendVolumeInput {
  newSizeGiB: number;
  /** Whether an in-use volume of `cluster` may be extended (3.42 and a backend that extends online); absent: never. */
  inUseAllowed?: (tx: Tx, cluster: string) => Promise<boolean>;
}

/** The volume extend operation. */
export const volumeExtend = operation<'volume', ExtendPayload, ExtendVolumeInput>().change({
  shape: 'change',
  name: 'volume.extend',
  resource: 'volume',
  from: ['available', 'in-use'],
  transitional: 'extending',
  to: ['available', 'in-use'],
  error: 'error_extending',
  action: MESSAGE_ACTIONS.EXTEND_VOLUME,
  lock: 'volume',
  jobs: { main: { kind: 'volume.extend', version: 1, minVersion: 1, parse: payloadParser<ExtendPayload>({ volumeId: 'string', newSizeGiB: 'number' }) } },

  async startsFrom({ tx }, v, input) {
    const inUse = v.status === 'in-use' && input.inUseAllowed !== undefined && await input.inUseAllowed(tx, v.cluster_name!);
    return inUse ? ['in-use'] : ['available'];
  },
  refusal: (v, _allowed, input) => `Invalid volume: Volume ${v.id} status must be available${input.inUseAllowed ? ' or in-use on a backend that extends online' : ''} to extend, but current status is: ${v.status}.`,

  async check(_ctx, v, input) {
    if (input.newSizeGiB <= v.size) {
      throw new InvalidInputError(`Invalid input received: New size for extend must be greater than current size. (current: ${v.size}, extended: ${input.newSizeGiB}).`);
    }
  },

  async request({ tx, deps, look }, v, input) {
    await look.refuseIfNoRoom(tx, v, input.newSizeGiB - v.size);
    const typeName = await typeNameOf(deps.types, tx, v.volume_type_id);
    await deps.quotas.consume(tx, v.project_id, volumeQuota(input.newSizeGiB - v.size, typeName, 0), input.newSizeGiB);
    return { job: { target: volumeTarget(v.cluster_name!), payload: { volumeId: v.id, newSizeGiB: input.newSizeGiB } } };
  },

  run: ({ driver }, v, p) => driver.extendVolume({ id: v.id, sizeGiB: v.size }, p.newSizeGiB),

  async finish({ tx, deps, enqueue, requestId }, v, p) {
    // An in-use volume (3.42) goes back to in-use: its attachments are still there.
    await deps.db.lockRows(tx, 'volumes', [v.id]);
    const attached = await tx.selectFrom('attachments').select('id').where('volume_id', '=', v.id).executeTakeFirst();
    if (await deps.volumes.transition(tx, { id: v.id, from: ['extending'], to: attached ? 'in-use' : 'available', set: { size: p.newSizeGiB }, requestId })) {
      await deps.volumes.event(tx, v.project_id, v.id, 'volume.extended', null, null, requestId, { size: p.newSizeGiB, previous_size: v.size, attached: attached !== undefined });
    }
    // The instances it is attached to resize their disks when Nova tells them (a delivery job of its own, never this one's).
    if (attached) await deps.compute?.volumeExtended(tx, enqueue, v, requestId);
  },

  async undo({ tx, deps }, v, p) {
    if (p) {
      // The size did not change: give back what the request took.
      await deps.quotas.release(tx, v.project_id, volumeQuota(p.newSizeGiB - v.size, await typeNameOf(deps.types, tx, v.volume_type_id), 0));
    } else {
      // Stuck with no job: nothing records how much the request took, so recount the project's gigabytes from the rows.
      await deps.quotas.recount(tx, v.project_id, ['gigabytes']);
    }
  },
});
