/**
 * Snapshot manage (`os-snapshot-manage`, 3.8 `manageable_snapshots`): a new
 * snapshot row of an existing volume adopting storage the volume's backend
 * already holds, named by a reference (`{"source-name": …}`).
 *
 * | | |
 * | --- | --- |
 * | starts from | a new row; its volume `available` or `in-use`, on a backend, not busy for reading, not frozen |
 * | transitional | `creating` |
 * | ends in | `available` |
 * | error | `error` (action: snapshot create); the storage is left as it was |
 * | jobs | `snapshot.manage` v1 (the volume's cluster) |
 * | lock | `snapshot-<id>` |
 *
 * Quota: one snapshot of the volume's size, taken in the request (as a
 * snapshot create does); a failed one holds it until deleted.
 */
import type { ManageReference } from '../../drivers/index.ts';
import { InvalidStatusError } from '../../errors/index.ts';
import { MESSAGE_ACTIONS } from '../../messages/index.ts';
import { volumeTarget } from '../../services/index.ts';
import { operation } from './operation.ts';
import { insertSnapshot } from './snapshot-create.ts';
import { isReference } from './volume-manage.ts';

/** `snapshot.manage` (target: the volume's cluster): adopt the storage `reference` names as the snapshot. */
export interface ManageSnapshotPayload { snapshotId: string; reference: ManageReference }

/** A snapshot manage request after validation. */
export interface ManageSnapshotInput {
  volumeId: string;
  reference: ManageReference;
  name: string | null;
  description: string | null;
  metadata: Record<string, string>;
}

/** The volume statuses a snapshot may be managed for (Cinder creates its row as a forced snapshot's). */
const VOLUME_FROM = ['available', 'in-use'] as const;

function parseManage(payload: unknown, version: number): ManageSnapshotPayload {
  if (version !== 1) throw new Error(`payload version ${version} is not readable`);
  const p = payload as Partial<ManageSnapshotPayload> | null;
  if (!p || typeof p.snapshotId !== 'string' || !isReference(p.reference)) throw new Error('payload must name snapshotId and a reference');
  return p as ManageSnapshotPayload;
}

const manage = { kind: 'snapshot.manage', version: 1, minVersion: 1, parse: parseManage } as const;

/** The snapshot manage operation. */
export const snapshotManage = operation<'snapshot', ManageSnapshotPayload, ManageSnapshotInput>().create({
  shape: 'create',
  name: 'snapshot.manage',
  resource: 'snapshot',
  from: [],
  transitional: 'creating',
  to: ['available'],
  // As a snapshot create's: one transitional status fails one way.
  error: 'error',
  action: MESSAGE_ACTIONS.SNAPSHOT_CREATE,
  lock: 'snapshot',
  jobs: { main: manage },

  async request({ tx, caller, deps, look }, id, input) {
    const v = await look.lockVolume(caller, input.volumeId, tx);
    if (!(VOLUME_FROM as readonly string[]).includes(v.status)) {
      throw new InvalidStatusError(`Invalid volume: Volume ${v.id} status must be ${VOLUME_FROM.join(' or ')}, but current status is: ${v.status}.`);
    }
    if (!v.cluster_name) throw new InvalidStatusError(`Invalid volume: Volume ${v.id} is on no backend.`);
    await look.refuseIfBusy(tx, v.id, { reading: true });
    await look.refuseIfFrozen(tx, v);
    await insertSnapshot({ tx, caller, deps }, id, v, input);
    return { job: { schema: manage, target: volumeTarget(v.cluster_name), payload: { snapshotId: id, reference: input.reference } satisfies ManageSnapshotPayload } };
  },

  run: ({ driver }, s, p) => driver.manageExistingSnapshot({ id: s.id, volumeId: s.volume_id }, p.reference),

  async finish({ tx, deps, requestId }, s) {
    await deps.snapshots.transition(tx, { id: s.id, from: ['creating'], to: 'available', set: { progress: '100%' }, requestId });
  },
});
