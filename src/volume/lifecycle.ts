/**
 * Steps shared by the API-side managers and the volume service's handlers:
 * what makes a volume busy, and removing rows together with their quota.
 */
import type { SnapshotRepository, SnapshotRow, VolumeRepository, VolumeRow, VolumeTypeRepository } from '../db/index.ts';
import type { Tx } from '../jobs/index.ts';
import type { QuotaEngine } from '../quota/index.ts';
import { snapshotQuota, typeNameOf, volumeQuota } from './volume-quota.ts';

/** The repositories these steps touch. */
export interface LifecycleDeps {
  volumes: VolumeRepository;
  snapshots: SnapshotRepository;
  types: VolumeTypeRepository;
  quotas: QuotaEngine;
}

/**
 * Why a volume cannot be changed (extended, reverted, deleted) — or, with
 * `reading`, read for a new snapshot or clone — right now, or undefined.
 * Driver work that reads the volume (a snapshot being taken, a clone being
 * made) must not see it change underneath; readers may share it, but not with
 * a revert rewriting it. Checked in the same transaction as the change it guards.
 */
export async function busyReason(deps: LifecycleDeps, tx: Tx, volumeId: string, opts: { reading?: boolean } = {}): Promise<string | undefined> {
  const blocking = opts.reading ? ['restoring'] : ['creating', 'deleting', 'restoring'];
  const working = (await deps.snapshots.ofVolume(tx, volumeId)).find((s) => blocking.includes(s.status));
  if (working) return `snapshot ${working.id} is ${working.status}`;
  if (opts.reading) return undefined;
  const clone = await tx.selectFrom('volumes').select('id').where('source_volid', '=', volumeId).where('status', '=', 'creating').executeTakeFirst();
  if (clone) return `volume ${clone.id} is being cloned from it`;
  return undefined;
}

/** Deletes a `deleting` (or `from`: an unmanage's `unmanaging`) volume's row and gives its quota back, in `tx`. */
export async function removeVolume(deps: LifecycleDeps, tx: Tx, v: VolumeRow, requestId: string | null, from = 'deleting'): Promise<void> {
  if (await deps.volumes.deleteRow(tx, v.id, from, requestId)) {
    await deps.quotas.release(tx, v.project_id, volumeQuota(v.size, await typeNameOf(deps.types, tx, v.volume_type_id)));
  }
}

/** Deletes a `deleting` (or `from`: an unmanage's `unmanaging`) snapshot's row and gives its quota back, in `tx`. */
export async function removeSnapshot(deps: LifecycleDeps, tx: Tx, s: SnapshotRow, requestId: string | null, from = 'deleting'): Promise<void> {
  if (await deps.snapshots.deleteRow(tx, s.id, from, requestId)) {
    await deps.quotas.release(tx, s.project_id, snapshotQuota(s.volume_size, await typeNameOf(deps.types, tx, s.volume_type_id)));
  }
}
