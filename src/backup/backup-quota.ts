/**
 * How backups count for quotas: `backups` (how many) and `backup_gigabytes`
 * (their sizes), counted from the rows when a project's usage row does not
 * exist yet, beside what the volume counter counts.
 */
import type { Kysely } from 'kysely';
import type { BackupRowRepository, Database } from '../db/index.ts';
import type { UsageCounter } from '../quota/index.ts';

/** Wraps `counter` with the backup resources. */
export function backupUsageCounter(backups: BackupRowRepository, counter: UsageCounter): UsageCounter {
  return async (q: Kysely<Database>, projectId: string, resource: string) => {
    if (resource !== 'backups' && resource !== 'backup_gigabytes') return counter(q, projectId, resource);
    const u = await backups.usage(q, projectId);
    return resource === 'backups' ? u.count : u.gigabytes;
  };
}
