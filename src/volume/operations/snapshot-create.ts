/**
 * Snapshot create. A snapshot of an attached volume runs on the member serving
 * its NBD export, which holds the export's writes meanwhile (crash-consistent).
 *
 * | | |
 * | --- | --- |
 * | starts from | a new row; its volume `available` (or `in-use` with `force`, always from 3.66), not busy for reading, not frozen |
 * | transitional | `creating` |
 * | ends in | `available` |
 * | error | `error` (action: snapshot create) |
 * | jobs | `snapshot.create` v1 (the volume's cluster, or the member serving its export) |
 * | lock | `snapshot-<id>` |
 */
import { isoAt } from '../../common/index.ts';
import { InvalidStatusError } from '../../errors/index.ts';
import { MESSAGE_ACTIONS } from '../../messages/index.ts';
import { snapshotQuota, typeNameOf } from '../volume-quota.ts';
import type { SnapshotRow, VolumeRow } from '../../db/index.ts';
import { operation, payloadParser, type RequestContext } from './operation.ts';
import type { SnapshotPayload } from './snapshot-delete.ts';

/** A snapshot request after validation. */
export interface CreateSnapshotInput {
  volumeId: string;
  force: boolean;
  name: string | null;
  description: string | null;
  metadata: Record<string, string>;
}

/** The volume statuses a snapshot may be taken from, with and without `force`. */
const VOLUME_FROM = { plain: ['available'], forced: ['available', 'in-use'] } as const;

const create = { kind: 'snapshot.create', version: 1, minVersion: 1, parse: payloadParser<SnapshotPayload>({ snapshotId: 'string' }) } as const;

/**
 * Takes a snapshot's quota (the volume's size) and inserts its row in
 * `creating`, with its metadata; a snapshot create and a snapshot manage alike.
 * @throws QuotaExceededError.
 */
export async function insertSnapshot(
  { tx, caller, deps }: Pick<RequestContext, 'tx' | 'caller' | 'deps'>, id: string, v: VolumeRow,
  input: Pick<CreateSnapshotInput, 'name' | 'description' | 'metadata'>,
): Promise<SnapshotRow> {
  await deps.quotas.consume(tx, caller.projectId, snapshotQuota(v.size, await typeNameOf(deps.types, tx, v.volume_type_id)));
  const row: SnapshotRow = {
    id, project_id: caller.projectId, user_id: caller.userId, volume_id: v.id, volume_size: v.size,
    volume_type_id: v.volume_type_id, name: input.name, description: input.description, status: 'creating', encryption_key_id: v.encryption_key_id,
    created_at: isoAt(deps.clock.now()), updated_at: null, group_snapshot_id: null, progress: null,
  };
  await deps.snapshots.insert(tx, row, input.metadata);
  return row;
}

/** The snapshot create operation. */
export const snapshotCreate = operation<'snapshot', SnapshotPayload, CreateSnapshotInput>().create({
  shape: 'create',
  name: 'snapshot.create',
  resource: 'snapshot',
  from: [],
  transitional: 'creating',
  to: ['available'],
  error: 'error',
  action: MESSAGE_ACTIONS.SNAPSHOT_CREATE,
  lock: 'snapshot',
  jobs: { main: create },

  async request({ tx, caller, deps, look }, id, input) {
    const v = await look.lockVolume(caller, input.volumeId, tx);
    const allowed: readonly string[] = input.force ? VOLUME_FROM.forced : VOLUME_FROM.plain;
    if (!allowed.includes(v.status)) {
      throw new InvalidStatusError(`Invalid volume: Volume ${v.id} status must be ${allowed.join(' or ')}, but current status is: ${v.status}.`);
    }
    await look.refuseIfBusy(tx, v.id, { reading: true });
    await look.refuseIfFrozen(tx, v);
    if (v.status === 'in-use') await look.refuseIfUnquiescable(tx, v);
    const row = await insertSnapshot({ tx, caller, deps }, id, v, input);
    // The answer is the row as inserted: the job may have made it available before the answer is built.
    return { job: { schema: create, target: await look.snapshotTarget(tx, v), payload: { snapshotId: id } satisfies SnapshotPayload }, created: { row, typeName: null } };
  },

  async run({ deps, driver }, s) {
    const v = await deps.volumes.get(deps.db.kysely, s.volume_id);
    const ref = { id: s.id, volumeId: s.volume_id, sizeGiB: s.volume_size };
    // An attached volume is snapshotted with its writes paused at the export (crash-consistent).
    // What is cached goes out first, while the writes still flow: the snapshot then holds them briefly.
    if (v && v.attach_status === 'attached' && deps.exports) {
      await driver.flushAhead([{ id: v.id, sizeGiB: v.size }]);
      await deps.exports.quiesce(v.id, () => driver.createSnapshot(ref));
    } else {
      await driver.createSnapshot(ref);
    }
  },

  async finish({ tx, deps, requestId }, s) {
    await deps.snapshots.transition(tx, { id: s.id, from: ['creating'], to: 'available', requestId });
  },
});
