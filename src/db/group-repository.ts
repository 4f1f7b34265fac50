/**
 * Queries on `groups` (generic volume groups, 3.13) and `group_volume_types`:
 * the shared resource queries of {@link ResourceRepository} (compare-and-swap
 * status changes with events, keyset lists), plus a group's volume types,
 * its member volumes and quota usage.
 */
import type { Kysely } from 'kysely';
import type { Clock } from '../common/index.ts';
import type { KeysetTable } from './keyset.ts';
import { ResourceRepository, type ResourceFilter } from './resource-repository.ts';
import type { Database, GroupRow, VolumeRow } from './schema.ts';

type Q = Kysely<Database>;

/** Sort keys clients may use. */
export const GROUP_SORT_KEYS: Record<string, keyof GroupRow> = {
  id: 'id', name: 'name', status: 'status', created_at: 'created_at', updated_at: 'updated_at',
  availability_zone: 'availability_zone', project_id: 'project_id', group_type_id: 'group_type_id',
};

const GROUP_KEYSET: KeysetTable<keyof GroupRow> = { table: 'groups', nullable: new Set(['name', 'updated_at']) };

/**
 * Records the pool a group's volumes live in, unless it already has one, in
 * one conditional UPDATE (two first volumes placed at once cannot pick two
 * pools). Returns whether the group is (now) in `host`. Used by the scheduler.
 */
export async function claimGroupHost(q: Q, groupId: string, host: string, cluster: string | null): Promise<boolean> {
  await q.updateTable('groups').set({ host, cluster_name: cluster }).where('id', '=', groupId).where('host', 'is', null).execute();
  const g = await q.selectFrom('groups').select('host').where('id', '=', groupId).executeTakeFirst();
  return g?.host === host;
}

/** Repository over groups. */
export class GroupRepository extends ResourceRepository<GroupRow, ResourceFilter> {
  constructor(clock: Clock) {
    super(clock, { table: 'groups', resourceType: 'group', keyset: GROUP_KEYSET });
  }

  /** Inserts a group with its volume types, and a create event. */
  async insertWithTypes(q: Q, row: GroupRow, volumeTypeIds: readonly string[]): Promise<void> {
    await this.insert(q, row, {});
    for (const volume_type_id of new Set(volumeTypeIds)) {
      await q.insertInto('group_volume_types').values({ group_id: row.id, volume_type_id }).execute();
    }
  }

  /** The volume type ids of many groups at once: group id → type ids (in name order). */
  async volumeTypesOf(q: Q, groupIds: readonly string[]): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>(groupIds.map((id) => [id, []]));
    if (groupIds.length === 0) return out;
    const rows = await q.selectFrom('group_volume_types').innerJoin('volume_types', 'volume_types.id', 'group_volume_types.volume_type_id')
      .select(['group_volume_types.group_id', 'group_volume_types.volume_type_id'])
      .where('group_volume_types.group_id', 'in', groupIds).orderBy('volume_types.name').execute();
    for (const r of rows) out.get(r.group_id)!.push(r.volume_type_id);
    return out;
  }

  /** The member volumes of a group, oldest first. */
  async members(q: Q, groupId: string): Promise<VolumeRow[]> {
    return q.selectFrom('volumes').selectAll().where('group_id', '=', groupId).orderBy('created_at').orderBy('id').execute();
  }

  /** Member volume ids of many groups at once. */
  async memberIdsOf(q: Q, groupIds: readonly string[]): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>(groupIds.map((id) => [id, []]));
    if (groupIds.length === 0) return out;
    const rows = await q.selectFrom('volumes').select(['id', 'group_id']).where('group_id', 'in', groupIds).orderBy('created_at').orderBy('id').execute();
    for (const r of rows) out.get(r.group_id!)!.push(r.id);
    return out;
  }

  /** Sets (or clears, with null) the group of volumes. */
  async setMembership(q: Q, volumeIds: readonly string[], groupId: string | null): Promise<void> {
    if (volumeIds.length === 0) return;
    await q.updateTable('volumes').set({ group_id: groupId }).where('id', 'in', volumeIds).execute();
  }

  /**
   * Records the pool a group's volumes live in, unless it already has one.
   * Returns whether the group is (now) in `host`.
   */
  claimHost(q: Q, groupId: string, host: string, cluster: string | null): Promise<boolean> {
    return claimGroupHost(q, groupId, host, cluster);
  }

  /** How many groups a project has (for quotas). */
  async usage(q: Q, projectId: string): Promise<number> {
    const r = await q.selectFrom('groups').select((eb) => eb.fn.countAll<number>().as('n')).where('project_id', '=', projectId).executeTakeFirstOrThrow();
    return Number(r.n);
  }
}
