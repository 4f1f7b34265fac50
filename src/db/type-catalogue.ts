/**
 * What volume types and group types share: a table of named types, public or
 * shared with projects, each with key/value specs. The repositories of both
 * kinds run these queries over their own tables.
 */
import type { Kysely } from 'kysely';
import { setOwn } from '../common/index.ts';
import type { Database } from './schema.ts';
import { prepared, type Prepared } from './prepared.ts';

type Q = Kysely<Database>;
type AnyQ = Kysely<any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Who is looking: admins see every type, others public ones and those shared with their project. */
export interface TypeViewer { isAdmin: boolean; projectId: string }

/** Where one kind of type lives: its table, its specs and its project access, both keyed by `fk`. */
export interface TypeTables {
  table: 'volume_types' | 'group_types';
  specTable: 'volume_type_extra_specs' | 'group_type_specs';
  projectTable: 'volume_type_projects' | 'group_type_projects';
  fk: 'volume_type_id' | 'group_type_id';
}

/** The rows every type has. */
interface TypeRow { id: string; name: string; is_public: number }

/**
 * Types `viewer` may see, by name. For admins `isPublic` picks public or
 * private ones (undefined: all); others always get the public types plus the
 * private ones shared with their project.
 */
export async function visibleTypes<R extends TypeRow>(q: Q, t: TypeTables, viewer: TypeViewer, isPublic?: boolean): Promise<R[]> {
  let s = (q as AnyQ).selectFrom(t.table).selectAll(t.table);
  if (viewer.isAdmin && isPublic !== undefined) s = s.where('is_public', '=', isPublic ? 1 : 0);
  if (!viewer.isAdmin) {
    s = s.where((eb) => eb.or([
      eb('is_public', '=', 1),
      eb.exists(eb.selectFrom(`${t.projectTable} as p`).select('p.project_id')
        .whereRef(`p.${t.fk}`, '=', `${t.table}.id`).where('p.project_id', '=', viewer.projectId)),
    ]));
  }
  return s.orderBy('name').execute() as Promise<R[]>;
}

/** The catalogue's hot reads of one kind of type, built once (prepared.ts). */
interface TypeQueries {
  /** Rows whose id or name is `key`. */
  byIdOrName: Prepared<{ key: string }, Record<string, unknown>>;
  /** Whether project `projectId` was given type `typeId`. */
  access: Prepared<{ typeId: string; projectId: string }, Record<string, unknown>>;
  /** The specs of type `typeId`, by key. */
  specs: Prepared<{ typeId: string }, Record<string, unknown>>;
}

const queries = new Map<TypeTables, TypeQueries>();

function queriesOf(t: TypeTables): TypeQueries {
  let qs = queries.get(t);
  if (!qs) {
    qs = {
      byIdOrName: prepared<{ key: string }>()((q, a) => (q as AnyQ).selectFrom(t.table).selectAll()
        .where((eb) => eb.or([eb('id', '=', a('key')), eb('name', '=', a('key'))]))),
      access: prepared<{ typeId: string; projectId: string }>()((q, a) => (q as AnyQ).selectFrom(t.projectTable).select('project_id')
        .where(t.fk, '=', a('typeId')).where('project_id', '=', a('projectId'))),
      specs: prepared<{ typeId: string }>()((q, a) => (q as AnyQ).selectFrom(t.specTable).selectAll().where(t.fk, '=', a('typeId')).orderBy('key')),
    };
    queries.set(t, qs);
  }
  return qs;
}

/** Whether `viewer` may see and use the type. */
export async function canUseType(q: Q, t: TypeTables, row: TypeRow, viewer: TypeViewer): Promise<boolean> {
  if (row.is_public || viewer.isAdmin) return true;
  return (await queriesOf(t).access.first(q, { typeId: row.id, projectId: viewer.projectId })) !== undefined;
}

/** A type by id or, failing that, by name, if `viewer` may see it. */
export async function findType<R extends TypeRow>(q: Q, t: TypeTables, idOrName: string, viewer: TypeViewer): Promise<R | undefined> {
  // One query for both (names are unique; an id match wins over a type named like another's id).
  const rows = await queriesOf(t).byIdOrName.all(q, { key: idOrName }) as R[];
  const row = rows.find((r) => r.id === idOrName) ?? rows[0];
  return row && await canUseType(q, t, row, viewer) ? row : undefined;
}

/** The specs of many types at once: type id → key → value (keys in order). */
export async function specsOf(q: Q, t: TypeTables, ids: readonly string[]): Promise<Map<string, Record<string, string>>> {
  const out = new Map<string, Record<string, string>>(ids.map((id) => [id, {}]));
  if (ids.length === 0) return out;
  const rows = ids.length === 1
    ? await queriesOf(t).specs.all(q, { typeId: ids[0]! })
    : await (q as AnyQ).selectFrom(t.specTable).selectAll().where(t.fk, 'in', ids).orderBy('key').execute();
  // Any key an admin stored, `__proto__` included, is the record's own.
  for (const r of rows) setOwn(out.get(r[t.fk])!, r.key, r.value);
  return out;
}

/** Sets the given specs of a type, keeping others. */
export async function putSpecs(q: Q, t: TypeTables, id: string, specs: Record<string, string>): Promise<void> {
  for (const [key, value] of Object.entries(specs)) {
    await (q as AnyQ).insertInto(t.specTable).values({ [t.fk]: id, key, value })
      .onConflict((oc) => oc.columns([t.fk, 'key']).doUpdateSet({ value })).execute();
  }
}

/** Deletes one spec of a type; false if absent. */
export async function deleteSpec(q: Q, t: TypeTables, id: string, key: string): Promise<boolean> {
  const r = await (q as AnyQ).deleteFrom(t.specTable).where(t.fk, '=', id).where('key', '=', key).executeTakeFirst();
  return r.numDeletedRows > 0n;
}
