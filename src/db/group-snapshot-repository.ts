/**
 * Queries on `group_snapshots` (3.14): the shared resource queries of
 * {@link ResourceRepository}, plus the member snapshots of a group snapshot
 * and the group snapshots of a group.
 */
import type { Kysely, SelectQueryBuilder } from 'kysely';
import type { Clock } from '../common/index.ts';
import type { KeysetTable } from './keyset.ts';
import { ResourceRepository, type ResourceFilter } from './resource-repository.ts';
import type { Database, GroupSnapshotRow, SnapshotRow } from './schema.ts';

type Q = Kysely<Database>;
type AnySelect = SelectQueryBuilder<any, any, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Sort keys clients may use. */
export const GROUP_SNAPSHOT_SORT_KEYS: Record<string, keyof GroupSnapshotRow> = {
  id: 'id', name: 'name', status: 'status', created_at: 'created_at', updated_at: 'updated_at',
  project_id: 'project_id', group_id: 'group_id',
};

const GROUP_SNAPSHOT_KEYSET: KeysetTable<keyof GroupSnapshotRow> = { table: 'group_snapshots', nullable: new Set(['name', 'updated_at']) };

/** Filters a group snapshot list understands. */
export interface GroupSnapshotFilter extends ResourceFilter {
  groupId?: string;
}

/** Repository over group snapshots. */
export class GroupSnapshotRepository extends ResourceRepository<GroupSnapshotRow, GroupSnapshotFilter> {
  constructor(clock: Clock) {
    super(clock, { table: 'group_snapshots', resourceType: 'group_snapshot', keyset: GROUP_SNAPSHOT_KEYSET });
  }

  protected override narrow(s: AnySelect, f: GroupSnapshotFilter): AnySelect {
    return f.groupId === undefined ? s : s.where('group_snapshots.group_id', '=', f.groupId);
  }

  /** The member snapshots of a group snapshot, one per volume. */
  async snapshotsOf(q: Q, groupSnapshotId: string): Promise<SnapshotRow[]> {
    return q.selectFrom('snapshots').selectAll().where('group_snapshot_id', '=', groupSnapshotId).orderBy('created_at').orderBy('id').execute();
  }

  /** The group snapshots of a group. */
  async ofGroup(q: Q, groupId: string): Promise<GroupSnapshotRow[]> {
    return q.selectFrom('group_snapshots').selectAll().where('group_id', '=', groupId).orderBy('created_at').execute();
  }
}
