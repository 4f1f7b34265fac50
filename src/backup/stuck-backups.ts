/**
 * The sweeper's rules for backups: nothing stays `creating`, `restoring` or
 * `deleting` once its job is gone (a process killed half way, a job failed
 * elsewhere), and no volume or snapshot stays `backing-up` or
 * `restoring-backup` once no backup job works on it.
 */
import { isoAt } from '../common/index.ts';
import type { Db, Tx } from '../db/index.ts';
import type { SweepRule } from '../jobs/index.ts';
import { MESSAGE_DETAILS } from '../messages/index.ts';
import { BACKUP_TRANSITIONAL, failBackup, settledStatus, type BackupJobDeps } from './backup-jobs.ts';

/** Whether a queued or running backup job works on a backup of (or restoring onto) the volume. */
async function backupJobOn(tx: Tx, volumeId: string): Promise<boolean> {
  const row = await tx.selectFrom('jobs').select('jobs.id')
    .where('jobs.state', 'in', ['queued', 'running'])
    .where('jobs.resource_id', 'in', (eb) => eb.selectFrom('backups').select('backups.id')
      .where((w) => w.or([w('backups.volume_id', '=', volumeId), w('backups.restore_volume_id', '=', volumeId)])))
    .executeTakeFirst();
  return row !== undefined;
}

/** Builds the rules. */
export function stuckBackupRules(db: Db, deps: BackupJobDeps): SweepRule[] {
  const backups: SweepRule = {
    name: 'stuck-backups',
    async sweep(olderThanMs) {
      let moved = 0;
      for (const b of await deps.backups.stuck(db.kysely, Object.keys(BACKUP_TRANSITIONAL), isoAt(olderThanMs))) {
        const ok = await db.kysely.transaction().execute(async (tx) => {
          // A restore onto a volume still being made from the backup (3.47) waits for that create's job.
          const onto = b.status === 'restoring' && b.restore_volume_id ? await deps.volumes.get(tx, b.restore_volume_id) : undefined;
          if (onto?.status === 'creating') return false;
          return failBackup(deps, tx, b.id, b.status as keyof typeof BACKUP_TRANSITIONAL, MESSAGE_DETAILS.INTERRUPTED, null, null);
        });
        if (ok) moved++;
      }
      return moved;
    },
  };
  const sources: SweepRule = {
    name: 'stuck-backup-sources',
    async sweep(olderThanMs) {
      let moved = 0;
      const before = isoAt(olderThanMs);
      for (const v of await deps.volumes.stuck(db.kysely, ['backing-up', 'restoring-backup'], before)) {
        const ok = await db.kysely.transaction().execute(async (tx) => {
          if (await backupJobOn(tx, v.id)) return false;
          const to = v.status === 'backing-up' ? settledStatus(v) : 'error_restoring';
          return deps.volumes.transition(tx, { id: v.id, from: [v.status], to, requestId: null });
        });
        if (ok) moved++;
      }
      for (const s of await deps.snapshots.stuck(db.kysely, ['backing-up'], before)) {
        const ok = await db.kysely.transaction().execute(async (tx) => {
          if (await backupJobOn(tx, s.volume_id)) return false;
          return deps.snapshots.transition(tx, { id: s.id, from: ['backing-up'], to: 'available', requestId: null });
        });
        if (ok) moved++;
      }
      return moved;
    },
  };
  return [backups, sources];
}
