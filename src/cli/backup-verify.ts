/**
 * `basalt backup verify BACKUP`: reads every blob of a backup back from the
 * backup target and checks it (as `restic check --read-data` does), on the
 * operator's demand, with progress on the terminal.
 *
 * It runs where the configuration is — the same database, backup target and
 * locks as the servers — and holds the volume's backup lock while it reads,
 * so no backup of the volume is being written or deleted meanwhile. A backup
 * found damaged is set to `error` with the reason (it cannot be restored
 * whole); one whose packs cannot be read for now (the target is down) is left
 * as it is and the command fails naming the target.
 */
import { configuredBackupTarget, dataIdOf, BackupRepository } from '../backup/index.ts';
import type { BasaltConfig } from '../config/index.ts';
import { openCoordinator, withLock } from '../coordination/index.ts';
import { openDatabase } from '../db/index.ts';
import { NotFoundError } from '../errors/index.ts';

/** What a verification found. */
export interface VerifyResult { backupId: string; volumeId: string; blobs: number; bad: string[] }

/**
 * Verifies backup `backupId`.
 * @throws NotFoundError for an unknown backup or one without a manifest; DriverError when the target cannot be read.
 */
export async function verifyBackup(config: BasaltConfig, backupId: string, onProgress?: (done: number, total: number) => void): Promise<VerifyResult> {
  const db = openDatabase(config.database.connection);
  const coordinator = openCoordinator(config.coordination.backend_url);
  try {
    const b = await db.kysely.selectFrom('backups').selectAll().where('id', '=', backupId).executeTakeFirst();
    if (!b) throw new NotFoundError(`Backup ${backupId} could not be found.`);
    const repository = new BackupRepository(await configuredBackupTarget(config.DEFAULT));
    const result = await withLock(coordinator, `backup-volume-${b.volume_id}`, config.coordination.lock_timeout_seconds * 1000, async () => {
      const manifest = await repository.manifest(b.volume_id, dataIdOf(b));
      if (!manifest) throw new NotFoundError(`Backup ${backupId} has no manifest on ${repository.target.location}: it was never completed, or its data was removed.`);
      return repository.verify(manifest, (p) => onProgress?.(p.doneBlobs, p.totalBlobs));
    });
    if (result.bad.length > 0) {
      const reason = `Verification found ${result.bad.length} damaged or missing blob(s) of ${result.blobs}, first ${result.bad[0]}`.slice(0, 255);
      await db.kysely.updateTable('backups').set({ status: 'error', fail_reason: reason }).where('id', '=', b.id).where('status', '=', 'available').execute();
      await db.durable();
    }
    return { backupId: b.id, volumeId: b.volume_id, ...result };
  } finally {
    await coordinator.close();
    await db.close();
  }
}
