/**
 * A volume created from a backup (3.47, `backup_id` in `POST /volumes`): the
 * volume is made as an empty one (scheduled like any other), then the backup
 * is restored onto it before it becomes available, as Cinder does for a
 * backend without its own create-from-backup.
 *
 * - The create request reserves the backup in its transaction: it must be
 *   `available` and no larger than the volume; it goes `restoring`, naming the
 *   new volume (`restore_volume_id`), so it cannot be deleted meanwhile.
 * - When the volume service has made the volume, the create's last
 *   transaction moves it to `restoring-backup` (not `available`) and queues
 *   the `backup.restore` job on its backend's backup target; the restore ends
 *   it `available` with the backup's data and metadata, or `error_restoring`.
 * - A create that fails leaves the backup `restoring` with no job: the
 *   sweeper gives it back (`available`) once its volume is no longer `creating`.
 */
import type { Caller } from '../common/index.ts';
import type { BackupRowRepository, Tx, VolumeRepository, VolumeRow } from '../db/index.ts';
import { InvalidInputError, InvalidStatusError, NotFoundError } from '../errors/index.ts';
import type { Enqueue } from '../jobs/index.ts';
import { backupTarget } from '../services/index.ts';
import type { BackupJobKinds } from './backup-jobs.ts';

/** The two steps, given to the volume manager (request) and the volume services (finish). */
export interface VolumeFromBackup {
  /**
   * Reserves backup `backupId` for a restore onto the volume `volumeId` being requested.
   * @throws NotFoundError, InvalidStatusError (not available), InvalidInputError (volume smaller than the backup).
   */
  reserve(tx: Tx, caller: Caller, backupId: string, sizeGiB: number, volumeId: string): Promise<void>;
  /**
   * In the transaction that ends a volume's create: when a backup waits to be
   * restored onto it, moves it to `restoring-backup`, queues the restore and
   * returns true (the create must not make it available); false otherwise.
   */
  afterCreate(tx: Tx, enqueue: Enqueue, v: VolumeRow, requestId: string | null): Promise<boolean>;
}

/** Builds the steps over the backup rows and the restore job kind. */
export function volumeFromBackup(deps: { backups: BackupRowRepository; volumes: VolumeRepository; kinds: Pick<BackupJobKinds, 'restore'> }): VolumeFromBackup {
  return {
    async reserve(tx, caller, backupId, sizeGiB, volumeId) {
      const b = await deps.backups.get(tx, backupId, caller.isAdmin ? 'all' : { projectId: caller.projectId });
      if (!b) throw NotFoundError.of('Backup', backupId);
      if (b.status !== 'available') throw new InvalidStatusError(`Invalid backup: Originating backup status must be one of 'available' values, but backup ${b.id} is ${b.status}.`);
      if (sizeGiB < b.size) throw new InvalidInputError(`Invalid input received: Volume size ${sizeGiB}GB cannot be smaller than the backup size ${b.size}GB. It must be >= backup size.`);
      if (!(await deps.backups.transition(tx, { id: b.id, from: ['available'], to: 'restoring', requestId: caller.requestId, set: { restore_volume_id: volumeId } }))) {
        throw new InvalidStatusError(`Invalid backup: Backup ${b.id} status changed concurrently; try again.`);
      }
    },
    async afterCreate(tx, enqueue, v, requestId) {
      const b = await tx.selectFrom('backups').selectAll().where('restore_volume_id', '=', v.id).where('status', '=', 'restoring').executeTakeFirst();
      if (!b || !v.cluster_name) return false;
      if (!(await deps.volumes.transition(tx, { id: v.id, from: ['creating'], to: 'restoring-backup', requestId }))) return true;
      await enqueue(deps.kinds.restore, { target: backupTarget(v.cluster_name), resourceId: b.id, requestId, payload: { backupId: b.id, volumeId: v.id, zeroed: true } });
      return true;
    },
  };
}
