/**
 * Queries on `snapshots` and `snapshot_metadata`: the shared resource queries
 * plus the volume relations (snapshots of a volume, the latest one) and usage.
 */
import type { Kysely, SelectQueryBuilder } from 'kysely';
import type { Clock } from '../common/index.ts';
import type { KeysetTable } from './keyset.ts';
import { ResourceRepository, type ResourceFilter } from './resource-repository.ts';
import type { Database, SnapshotRow } from './schema.ts';

type Q = Kysely<Database>;
type AnySelect = SelectQueryBuilder<any, any, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Sort keys clients may use. */
export const SNAPSHOT_SORT_KEYS: Record<string, keyof SnapshotRow> = {
  id: 'id', name: 'name', display_name: 'name', status: 'status', volume_id: 'volume_id', created_at: 'created_at',
  updated_at: 'updated_at', project_id: 'project_id', size: 'volume_size',
};

const SNAPSHOT_KEYSET: KeysetTable<keyof SnapshotRow> = { table: 'snapshots', nullable: new Set(['name', 'updated_at']) };

/** Filters a snapshot list understands. */
export interface SnapshotFilter extends ResourceFilter {
  volumeId?: string;
}

/** Repository over snapshots. */
export class SnapshotRepository extends ResourceRepository<SnapshotRow, SnapshotFilter> {
  constructor(clock: Clock) {
    super(clock, { table: 'snapshots', resourceType: 'snapshot', metadataTable: 'snapshot_metadata', metadataKey: 'snapshot_id', keyset: SNAPSHOT_KEYSET, jobParents: ['group_snapshot_id', 'volume_id'] });
  }

  protected override narrow(s: AnySelect, f: SnapshotFilter): AnySelect {
    return f.volumeId === undefined ? s : s.where('snapshots.volume_id', '=', f.volumeId);
  }

  /** Every snapshot of a volume, oldest first. */
  async ofVolume(q: Q, volumeId: string): Promise<SnapshotRow[]> {
    return q.selectFrom('snapshots').selectAll().where('volume_id', '=', volumeId).orderBy('created_at').orderBy('id').execute();
  }

  /** Count and sum of volume sizes of a project's snapshots, optionally of one type (for quotas). */
  async usage(q: Q, projectId: string, typeId?: string): Promise<{ count: number; gigabytes: number }> {
    let s = q.selectFrom('snapshots')
      .select((eb) => [eb.fn.countAll<number>().as('n'), eb.fn.coalesce(eb.fn.sum<number>('volume_size'), eb.lit(0)).as('g')])
      .where('project_id', '=', projectId);
    if (typeId !== undefined) s = s.where('volume_type_id', '=', typeId);
    const r = await s.executeTakeFirstOrThrow();
    return { count: Number(r.n), gigabytes: Number(r.g) };
  }
}
