/**
 * Queries on `volumes` and `volume_metadata`: the shared resource queries of
 * {@link ResourceRepository} (compare-and-swap status changes with events,
 * metadata, keyset lists), plus volume filters, quota usage and pool capacity.
 */
import type { Kysely, SelectQueryBuilder } from 'kysely';
import type { Clock } from '../common/index.ts';
import { isoAt } from '../common/index.ts';
import type { KeysetKey, KeysetTable } from './keyset.ts';
import { prepared } from './prepared.ts';
import { ResourceRepository, type ResourceFilter } from './resource-repository.ts';
import type { Database, VolumeRow } from './schema.ts';

const POOL_USAGE = prepared<{ host: string }>()((q, a) => q.selectFrom('pool_usage').select('gigabytes').where('host', '=', a('host')));

type Q = Kysely<Database>;
type AnySelect = SelectQueryBuilder<any, any, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Sort keys clients may use, mapped to columns. */
export const VOLUME_SORT_KEYS: Record<string, keyof VolumeRow> = {
  id: 'id', name: 'name', display_name: 'name', status: 'status', size: 'size',
  created_at: 'created_at', updated_at: 'updated_at', availability_zone: 'availability_zone',
  project_id: 'project_id', bootable: 'bootable', host: 'host',
};

/** Volume columns that may be NULL among the sort keys. */
const VOLUME_KEYSET: KeysetTable<keyof VolumeRow> = { table: 'volumes', nullable: new Set(['name', 'updated_at', 'host']) };

/** Columns added after the first release that an insert may leave to their defaults. */
type LaterColumns = 'migration_status' | 'migration_host' | 'replication_status';

/** Filters a volume list understands. */
export interface VolumeFilter extends ResourceFilter {
  availabilityZone?: string;
  bootable?: boolean;
  /** Members of this group (3.10's `group_id` filter). */
  groupId?: string;
}

/** One sort key and direction. */
export type SortKey = KeysetKey<keyof VolumeRow>;

/** Repository over volumes. */
export class VolumeRepository extends ResourceRepository<VolumeRow, VolumeFilter> {
  constructor(clock: Clock) {
    super(clock, { table: 'volumes', resourceType: 'volume', metadataTable: 'volume_metadata', metadataKey: 'volume_id', keyset: VOLUME_KEYSET, jobParents: ['group_id'] });
  }

  /**
   * Inserts a volume; the migration columns (0013) start null unless given, as
   * a volume never moved has them, and its replication status (0019) `disabled`.
   */
  override async insert(q: Q, row: Omit<VolumeRow, LaterColumns> & Partial<Pick<VolumeRow, LaterColumns>>, metadata: Record<string, string>): Promise<void> {
    await super.insert(q, { migration_status: null, migration_host: null, replication_status: 'disabled', ...row }, metadata);
  }

  protected override narrow(s: AnySelect, f: VolumeFilter): AnySelect {
    if (f.availabilityZone !== undefined) s = s.where('volumes.availability_zone', '=', f.availabilityZone);
    if (f.bootable !== undefined) s = s.where('volumes.bootable', '=', f.bootable ? 1 : 0);
    if (f.groupId !== undefined) s = s.where('volumes.group_id', '=', f.groupId);
    return s;
  }

  /** Count and sum of sizes of a project's volumes, optionally of one type (for quotas). */
  async usage(q: Q, projectId: string, typeId?: string): Promise<{ count: number; gigabytes: number }> {
    let s = q.selectFrom('volumes')
      .select((eb) => [eb.fn.countAll<number>().as('n'), eb.fn.coalesce(eb.fn.sum<number>('size'), eb.lit(0)).as('g')])
      .where('project_id', '=', projectId);
    if (typeId !== undefined) s = s.where('volume_type_id', '=', typeId);
    const r = await s.executeTakeFirstOrThrow();
    return { count: Number(r.n), gigabytes: Number(r.g) };
  }

  /** Sets the bootable or read-only flag (`os-set_bootable`, `os-update_readonly_flag`). */
  async setFlags(q: Q, id: string, set: { bootable?: number; readonly?: number }): Promise<void> {
    await q.updateTable('volumes').set({ ...set, updated_at: isoAt(this.clock.now()) }).where('id', '=', id).execute();
  }

  /**
   * Count, total size and every distinct metadata value (by key) of the
   * volumes matching `filter` (`GET /volumes/summary`, 3.12 and 3.36).
   */
  async summary(q: Q, filter: VolumeFilter): Promise<{ count: number; sizeGiB: number; metadata: Record<string, string[]> }> {
    const totals = await this.filtered(q, filter)
      .select((eb) => [eb.fn.countAll<number>().as('n'), eb.fn.coalesce(eb.fn.sum<number>('volumes.size'), eb.lit(0)).as('g')])
      .executeTakeFirstOrThrow() as { n: number; g: number };
    const pairs = await q.selectFrom('volume_metadata').select(['key', 'value']).distinct()
      .where('volume_id', 'in', this.filtered(q, filter).select('volumes.id'))
      .orderBy('key').orderBy('value').execute();
    // A Map, then own properties: a key such as `__proto__` or `constructor` is just a key.
    const byKey = new Map<string, string[]>();
    for (const p of pairs) {
      const values = byKey.get(p.key);
      if (values) values.push(p.value);
      else byKey.set(p.key, [p.value]);
    }
    return { count: Number(totals.n), sizeGiB: Number(totals.g), metadata: Object.fromEntries(byKey) };
  }

  /** Sum of sizes of the volumes placed in one pool (host string `host@backend#pool`): one row kept by triggers (migration 0026). */
  async provisionedGiB(q: Q, host: string): Promise<number> {
    const r = await POOL_USAGE.first(q, { host });
    return Number(r?.gigabytes ?? 0);
  }
}
