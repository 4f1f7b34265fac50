/**
 * What volumes and snapshots share in the database: rows with a project, a
 * status changed only by compare-and-swap (each change recorded as an event),
 * user metadata in a side table, keyset-paginated lists, and the sweeper's
 * stuck query. Each resource's repository adds its own queries on top.
 *
 * Table names are dynamic here, so queries go through an untyped Kysely view;
 * the public methods are typed by the resource's row.
 */
import type { Kysely, QueryResult, SelectQueryBuilder } from 'kysely';
import type { Clock } from '../common/index.ts';
import { isoAt, setOwn } from '../common/index.ts';
import { recordEvent } from './event-log.ts';
import { preparedShapes } from './prepared.ts';
import { afterMarker, keysetExpression, keysetKeys, type KeysetKey, type KeysetTable } from './keyset.ts';
import type { Database } from './schema.ts';

type Q = Kysely<Database>;

type AnyQ = Kysely<any>; // eslint-disable-line @typescript-eslint/no-explicit-any
type AnySelect = SelectQueryBuilder<any, any, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Which rows a caller may see: one project, or all (admin with all_tenants). */
export type ProjectScope = { projectId: string } | 'all';

/** A status change to make, if the row is in one of `from`. */
export interface Transition<Row extends { status: string }> {
  id: string;
  /** Statuses the row may be in (the compare of the compare-and-swap). */
  from: readonly Row['status'][];
  /** The status it takes. */
  to: Row['status'];
  /** Other columns to set in the same UPDATE. */
  set?: Partial<Row>;
  requestId?: string | null;
  /** What the status event says beyond the change (an error status's reason: `docs/events.md`). */
  detail?: Record<string, unknown>;
}

// The statements every create, status change and delete runs, prepared per
// table and shape (prepared.ts): a volume row alone has two dozen columns.
type Args = Record<string, unknown>;
const shape = preparedShapes<Args, Args>();

function insertRow(q: Q, table: string, row: Args): Promise<unknown> {
  const columns = Object.keys(row).filter((c) => row[c] !== undefined);
  return shape(`insert ${table}(${columns.join(',')})`, (k, a) => (k as AnyQ).insertInto(table).values(Object.fromEntries(columns.map((c) => [c, a(c)]))))
    .run(q, row);
}

function rowOf(q: Q, table: string, id: string, projectId?: string): Promise<Args | undefined> {
  return projectId === undefined
    ? shape(`get ${table}`, (k, a) => (k as AnyQ).selectFrom(table).selectAll().where('id', '=', a('id'))).first(q, { id })
    : shape(`get ${table} of project`, (k, a) => (k as AnyQ).selectFrom(table).selectAll().where('id', '=', a('id')).where('project_id', '=', a('projectId')))
      .first(q, { id, projectId });
}

/** `update table set <columns of set>, status = :to, updated_at = :at where id = :id and status in (:f0…)`, with `returning project_id` when asked. */
function setStatus(q: Q, table: string, id: string, from: readonly string[], set: Args, returning: boolean): Promise<QueryResult<Args>> {
  const columns = Object.keys(set).filter((c) => set[c] !== undefined && c !== 'status' && c !== 'updated_at');
  const args: Args = { id, ...set };
  from.forEach((f, i) => { args[`from${i}`] = f; });
  return shape(`status ${table}(${columns.join(',')}) from ${from.length}${returning ? ' returning' : ''}`, (k, a) => {
    const update = (k as AnyQ).updateTable(table)
      .set(Object.fromEntries([...columns, 'status', 'updated_at'].map((c) => [c, a(c)])))
      .where('id', '=', a('id')).where('status', 'in', from.map((_, i) => a(`from${i}`)));
    return returning ? update.returning('project_id') : update;
  }).run(q, args);
}

/** Filters every resource list understands. */
export interface ResourceFilter {
  scope: ProjectScope;
  name?: string;
  status?: string;
  /** Every pair must be present. */
  metadata?: Record<string, string>;
}

/** How one resource is stored. */
export interface ResourceTable<Row> {
  /** `volumes`, `snapshots`, `groups`, `group_snapshots`, `backups`. */
  table: 'volumes' | 'snapshots' | 'groups' | 'group_snapshots' | 'backups';
  /** `volume`, `snapshot`: events' resource type. */
  resourceType: string;
  /** Absent for resources without user metadata (groups). */
  metadataTable?: 'volume_metadata' | 'snapshot_metadata' | 'backup_metadata';
  /** Column of the metadata table naming the row. */
  metadataKey?: 'volume_id' | 'snapshot_id' | 'backup_id';
  keyset: KeysetTable<keyof Row & string>;
  /**
   * Columns naming parents whose jobs work on this row too: a volume's group;
   * a snapshot's group snapshot, and its volume (a cascaded volume delete
   * removes the snapshots it moved to `deleting`).
   */
  jobParents?: ReadonlyArray<'group_id' | 'group_snapshot_id' | 'volume_id'>;
}

/** Base of resource repositories. */
export class ResourceRepository<Row extends { id: string; project_id: string; status: string }, Filter extends ResourceFilter = ResourceFilter> {
  constructor(protected readonly clock: Clock, protected readonly t: ResourceTable<Row>) {}

  /** Inserts a row, its metadata and a create event. */
  async insert(q: Q, row: Row, metadata: Record<string, string>): Promise<void> {
    await insertRow(q, this.t.table, row as unknown as Record<string, unknown>);
    await this.addMetadata(q, row.id, metadata);
    await this.event(q, row.project_id, row.id, `${this.t.resourceType}.create`, null, row.status, null);
  }

  /** The row, if it exists within `scope`. */
  async get(q: Q, id: string, scope: ProjectScope = 'all'): Promise<Row | undefined> {
    return rowOf(q, this.t.table, id, scope === 'all' ? undefined : scope.projectId) as Promise<Row | undefined>;
  }

  /**
   * Compare-and-swap of the status: changes the row only if its status is one
   * of `t.from`. Returns whether it changed. Records an event when it did.
   */
  async transition(q: Q, t: Transition<Row>): Promise<boolean> {
    const set: Args = { ...t.set, status: t.to, updated_at: isoAt(this.clock.now()) };
    let from: string;
    let projectId: string;
    if (t.from.length === 1) {
      // The status it had is the one it was allowed to have: one statement, the row's project read back.
      const changed = (await setStatus(q, this.t.table, t.id, t.from, set, true)).rows[0] as { project_id: string } | undefined;
      if (!changed) return false;
      [from, projectId] = [t.from[0]!, changed.project_id];
    } else {
      const before = await this.get(q, t.id);
      if (!before || Number((await setStatus(q, this.t.table, t.id, t.from, set, false)).numAffectedRows ?? 0) === 0) return false;
      [from, projectId] = [before.status, before.project_id];
    }
    await this.event(q, projectId, t.id, `${this.t.resourceType}.status`, from, t.to, t.requestId ?? null, t.detail);
    return true;
  }

  /** Deletes the row if its status is `from`; metadata goes with it (FK cascade). */
  async deleteRow(q: Q, id: string, from: string, requestId: string | null): Promise<boolean> {
    const row = await this.get(q, id);
    if (!row) return false;
    const r = await (q as AnyQ).deleteFrom(this.t.table).where('id', '=', id).where('status', '=', from).executeTakeFirst();
    if (r.numDeletedRows === 0n) return false;
    await this.event(q, row.project_id, id, `${this.t.resourceType}.delete`, from, 'deleted', requestId);
    return true;
  }

  /** Updates name/description (not status). */
  async update(q: Q, id: string, set: { name?: string | null; description?: string | null }): Promise<void> {
    await (q as AnyQ).updateTable(this.t.table).set({ ...set, updated_at: isoAt(this.clock.now()) }).where('id', '=', id).execute();
  }

  /**
   * Lists rows matching `filter`, ordered by `sort` (id appended as the final
   * tie-breaker), starting after `marker` (keyset pagination) and skipping
   * `offset` rows, at most `limit`.
   */
  async list(q: Q, filter: Filter, sort: KeysetKey<keyof Row & string>[], limit: number, marker?: Row, offset = 0): Promise<Row[]> {
    const keys = keysetKeys(sort);
    let s = this.filtered(q, filter).selectAll(this.t.table);
    if (marker) s = s.where(afterMarker(this.t.keyset, keys, marker));
    for (const k of keys) s = s.orderBy(keysetExpression(this.t.keyset, k.column), k.dir);
    s = s.limit(limit);
    if (offset > 0) s = s.offset(offset);
    return s.execute() as Promise<Row[]>;
  }

  /** How many rows match `filter` (for `with_count`). */
  async count(q: Q, filter: Filter): Promise<number> {
    const r = await this.filtered(q, filter).select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    return Number((r as { n: number }).n);
  }

  /** The shared filters; subclasses add their own in {@link narrow}. */
  protected filtered(q: Q, f: Filter): AnySelect {
    const tb = this.t.table;
    let s: AnySelect = (q as AnyQ).selectFrom(tb);
    if (f.scope !== 'all') s = s.where(`${tb}.project_id`, '=', f.scope.projectId);
    if (f.name !== undefined) s = s.where(`${tb}.name`, '=', f.name);
    if (f.status !== undefined) s = s.where(`${tb}.status`, '=', f.status);
    const metadata = Object.entries(f.metadata ?? {});
    // A resource without metadata (group snapshots) has no row with the metadata asked for.
    if (metadata.length > 0 && !this.t.metadataTable) return this.narrow(s.where(`${tb}.id`, 'is', null), f);
    for (const [key, value] of metadata) {
      s = s.where((eb) => eb.exists(eb.selectFrom(`${this.t.metadataTable!} as m`).select(`m.${this.t.metadataKey!}`)
        .whereRef(`m.${this.t.metadataKey!}`, '=', `${tb}.id`).where('m.key', '=', key).where('m.value', '=', value)));
    }
    return this.narrow(s, f);
  }

  /** Resource-specific filters. Default: none. */
  protected narrow(s: AnySelect, _f: Filter): AnySelect {
    return s;
  }

  /** Metadata of many rows at once: id → key → value. */
  async metadataOf(q: Q, ids: readonly string[]): Promise<Map<string, Record<string, string>>> {
    const out = new Map<string, Record<string, string>>(ids.map((id) => [id, {}]));
    if (ids.length === 0) return out;
    const rows = await (q as AnyQ).selectFrom(this.t.metadataTable!).selectAll().where(this.t.metadataKey!, 'in', ids).orderBy('key').execute();
    // Any key a client stored, `__proto__` included, is the record's own.
    for (const r of rows) setOwn(out.get(r[this.t.metadataKey!])!, r.key, r.value);
    return out;
  }

  /** Sets the given keys, keeping others. */
  async addMetadata(q: Q, id: string, metadata: Record<string, string>): Promise<void> {
    for (const [key, value] of Object.entries(metadata)) {
      await (q as AnyQ).insertInto(this.t.metadataTable!).values({ [this.t.metadataKey!]: id, key, value })
        .onConflict((oc) => oc.columns([this.t.metadataKey!, 'key']).doUpdateSet({ value }))
        .execute();
    }
  }

  /** Replaces all metadata. */
  async replaceMetadata(q: Q, id: string, metadata: Record<string, string>): Promise<void> {
    await (q as AnyQ).deleteFrom(this.t.metadataTable!).where(this.t.metadataKey!, '=', id).execute();
    await this.addMetadata(q, id, metadata);
  }

  /** Deletes one key; false if it was absent. */
  async deleteMetadataKey(q: Q, id: string, key: string): Promise<boolean> {
    const r = await (q as AnyQ).deleteFrom(this.t.metadataTable!).where(this.t.metadataKey!, '=', id).where('key', '=', key).executeTakeFirst();
    return r.numDeletedRows > 0n;
  }

  /**
   * Rows in one of `statuses`, last changed before `beforeIso`, with no queued
   * or running job: the sweeper's stuck candidates.
   */
  async stuck(q: Q, statuses: readonly string[], beforeIso: string): Promise<Row[]> {
    const tb = this.t.table;
    return (q as AnyQ).selectFrom(tb).selectAll()
      .where('status', 'in', statuses)
      .where((eb) => eb(eb.fn.coalesce('updated_at', 'created_at'), '<', beforeIso))
      .where((eb) => eb.not(eb.exists(eb.selectFrom('jobs').select('jobs.id')
        .where((j) => j.or([
          j('jobs.resource_id', '=', j.ref(`${tb}.id`)),
          // A group's job works on its members, a cascaded volume delete on the volume's snapshots: they are not stuck while it runs.
          ...(this.t.jobParents ?? []).map((parent) => j('jobs.resource_id', '=', j.ref(`${tb}.${parent}`))),
        ]))
        .where('jobs.state', 'in', ['queued', 'running']))))
      .execute() as Promise<Row[]>;
  }

  /** Records an event of one of this repository's rows (`event-log.ts`). */
  async event(q: Q, projectId: string, id: string, event: string, from: string | null, to: string | null, requestId: string | null, detail?: Record<string, unknown>): Promise<void> {
    await recordEvent(q, this.clock.now(), { projectId, resourceType: this.t.resourceType, resourceId: id, event, from, to, requestId, detail: detail ?? null });
  }
}
