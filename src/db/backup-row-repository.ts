/**
 * Queries on `backups` and `backup_metadata`: the shared resource queries
 * (compare-and-swap status changes with events, metadata, keyset lists, the
 * sweeper's stuck query) plus a volume's backups, dependants (incremental
 * backups naming a backup as their parent) and usage for quotas.
 *
 * Not to be confused with the backup repository (`src/backup`), which keeps
 * the backups' chunks and manifests on a backup target: this one keeps their rows.
 */
import type { Kysely, SelectQueryBuilder } from 'kysely';
import type { Clock } from '../common/index.ts';
import type { KeysetTable } from './keyset.ts';
import { ResourceRepository, type ResourceFilter } from './resource-repository.ts';
import type { BackupRow, Database } from './schema.ts';

type Q = Kysely<Database>;
type AnySelect = SelectQueryBuilder<any, any, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Sort keys clients may use (`name` from 3.37, as Cinder). */
export const BACKUP_SORT_KEYS: Record<string, keyof BackupRow> = {
  id: 'id', name: 'name', display_name: 'name', status: 'status', volume_id: 'volume_id', created_at: 'created_at',
  updated_at: 'updated_at', project_id: 'project_id', size: 'size', data_timestamp: 'data_timestamp',
};

const BACKUP_KEYSET: KeysetTable<keyof BackupRow> = { table: 'backups', nullable: new Set(['name', 'updated_at', 'data_timestamp']) };

/** Filters a backup list understands. */
export interface BackupFilter extends ResourceFilter {
  volumeId?: string;
}

/** Repository over backup rows. */
export class BackupRowRepository extends ResourceRepository<BackupRow, BackupFilter> {
  constructor(clock: Clock) {
    super(clock, { table: 'backups', resourceType: 'backup', metadataTable: 'backup_metadata', metadataKey: 'backup_id', keyset: BACKUP_KEYSET });
  }

  protected override narrow(s: AnySelect, f: BackupFilter): AnySelect {
    return f.volumeId === undefined ? s : s.where('backups.volume_id', '=', f.volumeId);
  }

  /** Every backup of a volume in a project, oldest data first. */
  async ofVolume(q: Q, volumeId: string, projectId: string): Promise<BackupRow[]> {
    return q.selectFrom('backups').selectAll().where('volume_id', '=', volumeId).where('project_id', '=', projectId)
      .orderBy('data_timestamp').orderBy('created_at').orderBy('id').execute();
  }

  /** Which of `ids` have incremental backups naming them as parent. */
  async withDependants(q: Q, ids: readonly string[]): Promise<Set<string>> {
    if (ids.length === 0) return new Set();
    const rows = await q.selectFrom('backups').select('parent_id').distinct().where('parent_id', 'in', ids).execute();
    return new Set(rows.map((r) => r.parent_id!));
  }

  /** Count and sum of sizes of a project's backups (for quotas). */
  async usage(q: Q, projectId: string): Promise<{ count: number; gigabytes: number }> {
    const r = await q.selectFrom('backups')
      .select((eb) => [eb.fn.countAll<number>().as('n'), eb.fn.coalesce(eb.fn.sum<number>('size'), eb.lit(0)).as('g')])
      .where('project_id', '=', projectId).executeTakeFirstOrThrow();
    return { count: Number(r.n), gigabytes: Number(r.g) };
  }

  /** Sets columns other than the status (a finished job's counts, the service that ran it). */
  async set(q: Q, id: string, set: Partial<Pick<BackupRow, 'object_count' | 'fail_reason' | 'host' | 'service' | 'restore_volume_id' | 'data_timestamp'>>): Promise<void> {
    await q.updateTable('backups').set(set).where('id', '=', id).execute();
  }
}
