/**
 * Every query on `volumes` and `volume_metadata`. Status changes are one
 * compare-and-swap UPDATE each (never check-then-write), and every change of
 * status records an event in the same transaction.
 */
import type { Clock } from '../common/index.ts';
import { isoAt, newId } from '../common/index.ts';
import type { Kysely } from 'kysely';
import { afterMarker, keysetExpression, keysetKeys, type KeysetKey, type KeysetTable } from './keyset.ts';
import type { Database, NewVolume, VolumeRow, VolumeUpdate } from './schema.ts';

type Q = Kysely<Database>;

/** Which rows a caller may see: one project, or all (admin with all_tenants). */
export type ProjectScope = { projectId: string } | 'all';

/** A status change to make, if the row is in one of `from`. */
export interface Transition {
  id: string;
  from: readonly string[];
  to: string;
  /** Other columns to set in the same UPDATE. */
  set?: VolumeUpdate;
  requestId?: string | null;
}

/** Sort keys clients may use, mapped to columns. */
export const VOLUME_SORT_KEYS: Record<string, keyof VolumeRow> = {
  id: 'id', name: 'name', display_name: 'name', status: 'status', size: 'size',
  created_at: 'created_at', updated_at: 'updated_at', availability_zone: 'availability_zone',
  project_id: 'project_id', bootable: 'bootable', host: 'host',
};

/** Volume columns that may be NULL among the sort keys. */
const VOLUME_KEYSET: KeysetTable<keyof VolumeRow> = { table: 'volumes', nullable: new Set(['name', 'updated_at', 'host']) };

/** Filters a volume list understands. */
export interface VolumeFilter {
  scope: ProjectScope;
  name?: string;
  status?: string;
  availabilityZone?: string;
  bootable?: boolean;
  /** Every pair must be present. */
  metadata?: Record<string, string>;
}

/** One sort key and direction. */
export type SortKey = KeysetKey<keyof VolumeRow>;

/** Repository over volumes. */
export class VolumeRepository {
  constructor(private readonly clock: Clock) {}

  /** Inserts a volume and its metadata. */
  async insert(q: Q, row: NewVolume, metadata: Record<string, string>): Promise<void> {
    await q.insertInto('volumes').values(row).execute();
    await this.addMetadata(q, row.id, metadata);
    await this.event(q, row.project_id, row.id, 'volume.create', null, row.status, null);
  }

  /** The volume, if it exists within `scope`. */
  async get(q: Q, id: string, scope: ProjectScope = 'all'): Promise<VolumeRow | undefined> {
    let s = q.selectFrom('volumes').selectAll().where('id', '=', id);
    if (scope !== 'all') s = s.where('project_id', '=', scope.projectId);
    return s.executeTakeFirst();
  }

  /**
   * Compare-and-swap of the status: changes the row only if its status is one
   * of `t.from`. Returns whether it changed. Records an event when it did.
   */
  async transition(q: Q, t: Transition): Promise<boolean> {
    const now = isoAt(this.clock.now());
    const before = await q.selectFrom('volumes').select(['project_id', 'status']).where('id', '=', t.id).executeTakeFirst();
    const r = await q.updateTable('volumes')
      .set({ ...t.set, status: t.to, updated_at: now })
      .where('id', '=', t.id).where('status', 'in', t.from)
      .executeTakeFirst();
    if (r.numUpdatedRows === 0n) return false;
    await this.event(q, before!.project_id, t.id, 'volume.status', before!.status, t.to, t.requestId ?? null);
    return true;
  }

  /** Deletes the row if its status is `from`; metadata goes with it (FK cascade). */
  async deleteRow(q: Q, id: string, from: string, requestId: string | null): Promise<boolean> {
    const row = await this.get(q, id);
    const r = await q.deleteFrom('volumes').where('id', '=', id).where('status', '=', from).executeTakeFirst();
    if (r.numDeletedRows === 0n) return false;
    await this.event(q, row!.project_id, id, 'volume.delete', from, 'deleted', requestId);
    return true;
  }

  /** Updates name/description (not status). */
  async update(q: Q, id: string, set: Pick<VolumeUpdate, 'name' | 'description'>): Promise<void> {
    await q.updateTable('volumes').set({ ...set, updated_at: isoAt(this.clock.now()) }).where('id', '=', id).execute();
  }

  /**
   * Lists volumes matching `filter`, ordered by `sort` (id appended as the final
   * tie-breaker), starting after `marker` (keyset pagination), at most `limit`.
   */
  async list(q: Q, filter: VolumeFilter, sort: SortKey[], limit: number, marker?: VolumeRow): Promise<VolumeRow[]> {
    const keys = keysetKeys(sort);
    let s = this.filtered(q, filter).selectAll('volumes');
    if (marker) s = s.where(afterMarker(VOLUME_KEYSET, keys, marker));
    for (const k of keys) s = s.orderBy(keysetExpression(VOLUME_KEYSET, k.column), k.dir);
    return s.limit(limit).execute();
  }

  /** How many volumes match `filter` (for `with_count`). */
  async count(q: Q, filter: VolumeFilter): Promise<number> {
    const r = await this.filtered(q, filter).select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    return Number(r.n);
  }

  private filtered(q: Q, f: VolumeFilter) {
    let s = q.selectFrom('volumes');
    if (f.scope !== 'all') s = s.where('volumes.project_id', '=', f.scope.projectId);
    if (f.name !== undefined) s = s.where('volumes.name', '=', f.name);
    if (f.status !== undefined) s = s.where('volumes.status', '=', f.status);
    if (f.availabilityZone !== undefined) s = s.where('volumes.availability_zone', '=', f.availabilityZone);
    if (f.bootable !== undefined) s = s.where('volumes.bootable', '=', f.bootable ? 1 : 0);
    for (const [key, value] of Object.entries(f.metadata ?? {})) {
      s = s.where((eb) => eb.exists(eb.selectFrom('volume_metadata as m').select('m.volume_id')
        .whereRef('m.volume_id', '=', 'volumes.id').where('m.key', '=', key).where('m.value', '=', value)));
    }
    return s;
  }

  /** Metadata of many volumes at once: id → key → value. */
  async metadataOf(q: Q, ids: readonly string[]): Promise<Map<string, Record<string, string>>> {
    const out = new Map<string, Record<string, string>>(ids.map((id) => [id, {}]));
    if (ids.length === 0) return out;
    const rows = await q.selectFrom('volume_metadata').selectAll().where('volume_id', 'in', ids).orderBy('key').execute();
    for (const r of rows) out.get(r.volume_id)![r.key] = r.value;
    return out;
  }

  /** Sets the given keys, keeping others. */
  async addMetadata(q: Q, id: string, metadata: Record<string, string>): Promise<void> {
    for (const [key, value] of Object.entries(metadata)) {
      await q.insertInto('volume_metadata').values({ volume_id: id, key, value })
        .onConflict((oc) => oc.columns(['volume_id', 'key']).doUpdateSet({ value }))
        .execute();
    }
  }

  /** Replaces all metadata. */
  async replaceMetadata(q: Q, id: string, metadata: Record<string, string>): Promise<void> {
    await q.deleteFrom('volume_metadata').where('volume_id', '=', id).execute();
    await this.addMetadata(q, id, metadata);
  }

  /** Deletes one key; false if it was absent. */
  async deleteMetadataKey(q: Q, id: string, key: string): Promise<boolean> {
    const r = await q.deleteFrom('volume_metadata').where('volume_id', '=', id).where('key', '=', key).executeTakeFirst();
    return r.numDeletedRows > 0n;
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

  /** Sum of sizes of the volumes placed in one pool (host string `host@backend#pool`). */
  async provisionedGiB(q: Q, host: string): Promise<number> {
    const r = await q.selectFrom('volumes')
      .select((eb) => eb.fn.coalesce(eb.fn.sum<number>('size'), eb.lit(0)).as('g'))
      .where('host', '=', host).executeTakeFirstOrThrow();
    return Number(r.g);
  }

  /**
   * Volumes in one of `statuses`, last changed before `beforeIso`, with no queued
   * or running job: the sweeper's stuck candidates.
   */
  async stuck(q: Q, statuses: readonly string[], beforeIso: string): Promise<VolumeRow[]> {
    return q.selectFrom('volumes').selectAll()
      .where('status', 'in', statuses)
      .where((eb) => eb(eb.fn.coalesce('updated_at', 'created_at'), '<', beforeIso))
      .where((eb) => eb.not(eb.exists(eb.selectFrom('jobs').select('jobs.id')
        .whereRef('jobs.resource_id', '=', 'volumes.id').where('jobs.state', 'in', ['queued', 'running']))))
      .execute();
  }

  private async event(q: Q, projectId: string, id: string, event: string, from: string | null, to: string | null, requestId: string | null): Promise<void> {
    await q.insertInto('events').values({
      id: newId(), project_id: projectId, resource_type: 'volume', resource_id: id, event,
      from_status: from, to_status: to, request_id: requestId, created_at: isoAt(this.clock.now()),
    }).execute();
  }
}
