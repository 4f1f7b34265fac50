/**
 * Queries on volume types, their extra specs and project access, and
 * per-project default types.
 */
import type { Kysely } from 'kysely';
import type { Clock } from '../common/index.ts';
import { isoAt, newId } from '../common/index.ts';
import { CatalogueMemo } from './catalogue-memo.ts';
import { prepared } from './prepared.ts';
import type { Database, VolumeTypeRow } from './schema.ts';
import { canUseType, deleteSpec, findType, putSpecs, specsOf, visibleTypes, type TypeTables, type TypeViewer } from './type-catalogue.ts';

type Q = Kysely<Database>;

/** A type as callers see it: the row with its extra specs. */
export interface VolumeType extends VolumeTypeRow { extra_specs: Record<string, string> }

export type { TypeViewer } from './type-catalogue.ts';

/** Where volume types live. */
const TABLES: TypeTables = { table: 'volume_types', specTable: 'volume_type_extra_specs', projectTable: 'volume_type_projects', fk: 'volume_type_id' };

/** The default type of a project, read by every create without a type (prepared.ts). */
const PROJECT_DEFAULT = prepared<{ projectId: string }>()((q, a) =>
  q.selectFrom('default_volume_types').select('volume_type_id').where('project_id', '=', a('projectId')));

/** Repository over volume types. */
export class VolumeTypeRepository {
  /** @param memo where `find` and `projectDefault` keep what they read; share one with the other catalogue repositories (catalogue-memo.ts). */
  constructor(private readonly clock: Clock, private readonly memo = new CatalogueMemo()) {}

  /**
   * Types `viewer` may see, by name. For admins `isPublic` picks public or
   * private ones (undefined: all); others always get the public types plus the
   * private ones shared with their project.
   */
  async list(q: Q, viewer: TypeViewer, isPublic?: boolean): Promise<VolumeType[]> {
    return this.withSpecs(q, await visibleTypes<VolumeTypeRow>(q, TABLES, viewer, isPublic));
  }

  /** A type by id or, failing that, by name, if `viewer` may see it. */
  find(q: Q, idOrName: string, viewer: TypeViewer): Promise<VolumeType | undefined> {
    // Admins see every type: what they find does not depend on their project.
    return this.memo.read(q, `type\0${idOrName}\0${viewer.isAdmin ? '' : viewer.projectId}`, async () => {
      const row = await findType<VolumeTypeRow>(q, TABLES, idOrName, viewer);
      return row && (await this.withSpecs(q, [row]))[0];
    });
  }

  /** Types by id, for views (no visibility check). */
  async byIds(q: Q, ids: readonly string[]): Promise<Map<string, VolumeTypeRow>> {
    if (ids.length === 0) return new Map();
    const rows = await q.selectFrom('volume_types').selectAll().where('id', 'in', [...new Set(ids)]).execute();
    return new Map(rows.map((r) => [r.id, r]));
  }

  /** Whether `viewer` may see and use the type. */
  canUse(q: Q, t: VolumeTypeRow, viewer: TypeViewer): Promise<boolean> {
    return canUseType(q, TABLES, t, viewer);
  }

  /** Creates a type; the caller checked the name is free. */
  async create(q: Q, t: { name: string; description: string | null; isPublic: boolean; extraSpecs: Record<string, string> }): Promise<string> {
    this.memo.changed(q);
    const id = newId();
    await q.insertInto('volume_types').values({
      id, name: t.name, description: t.description, is_public: t.isPublic ? 1 : 0, qos_specs_id: null,
      created_at: isoAt(this.clock.now()), updated_at: null,
    }).execute();
    await this.setExtraSpecs(q, id, t.extraSpecs);
    return id;
  }

  /** Whether a type of this name exists. */
  async nameTaken(q: Q, name: string, exceptId?: string): Promise<boolean> {
    let s = q.selectFrom('volume_types').select('id').where('name', '=', name);
    if (exceptId) s = s.where('id', '!=', exceptId);
    return (await s.executeTakeFirst()) !== undefined;
  }

  /** Updates name, description or visibility. */
  async update(q: Q, id: string, set: { name?: string; description?: string | null; is_public?: number }): Promise<void> {
    this.memo.changed(q);
    await q.updateTable('volume_types').set({ ...set, updated_at: isoAt(this.clock.now()) }).where('id', '=', id).execute();
  }

  /** Whether any volume or group uses the type. */
  async inUse(q: Q, id: string): Promise<boolean> {
    // A group that allows the type uses it too (group_volume_types refers to it).
    if (await q.selectFrom('group_volume_types').select('group_id').where('volume_type_id', '=', id).limit(1).executeTakeFirst()) return true;
    return (await q.selectFrom('volumes').select('id').where('volume_type_id', '=', id).limit(1).executeTakeFirst()) !== undefined;
  }

  /** Deletes the type (specs, access and default entries cascade). */
  async delete(q: Q, id: string): Promise<void> {
    this.memo.changed(q);
    await q.deleteFrom('volume_types').where('id', '=', id).execute();
  }

  /** Sets the given extra specs, keeping others. */
  setExtraSpecs(q: Q, id: string, specs: Record<string, string>): Promise<void> {
    this.memo.changed(q);
    return putSpecs(q, TABLES, id, specs);
  }

  /** Deletes one extra spec; false if absent. */
  deleteExtraSpec(q: Q, id: string, key: string): Promise<boolean> {
    this.memo.changed(q);
    return deleteSpec(q, TABLES, id, key);
  }

  /** Projects a type is shared with. */
  async access(q: Q, id: string): Promise<string[]> {
    return (await q.selectFrom('volume_type_projects').select('project_id').where('volume_type_id', '=', id).orderBy('project_id').execute()).map((r) => r.project_id);
  }

  /** Shares a type with a project; false if it already was. */
  async addAccess(q: Q, id: string, projectId: string): Promise<boolean> {
    this.memo.changed(q);
    const r = await q.insertInto('volume_type_projects').values({ volume_type_id: id, project_id: projectId })
      .onConflict((oc) => oc.columns(['volume_type_id', 'project_id']).doNothing()).executeTakeFirst();
    return Number(r.numInsertedOrUpdatedRows ?? 0n) > 0;
  }

  /** Stops sharing; false if it was not shared. */
  async removeAccess(q: Q, id: string, projectId: string): Promise<boolean> {
    this.memo.changed(q);
    const r = await q.deleteFrom('volume_type_projects').where('volume_type_id', '=', id).where('project_id', '=', projectId).executeTakeFirst();
    return r.numDeletedRows > 0n;
  }

  /** A project's own default type id, if set. */
  projectDefault(q: Q, projectId: string): Promise<string | undefined> {
    return this.memo.read(q, `default\0${projectId}`, async () => (await PROJECT_DEFAULT.first(q, { projectId }))?.volume_type_id);
  }

  /** All per-project defaults. */
  async projectDefaults(q: Q): Promise<Array<{ project_id: string; volume_type_id: string }>> {
    return q.selectFrom('default_volume_types').selectAll().orderBy('project_id').execute();
  }

  /** Sets a project's default type. */
  async setProjectDefault(q: Q, projectId: string, typeId: string): Promise<void> {
    this.memo.changed(q);
    await q.insertInto('default_volume_types').values({ project_id: projectId, volume_type_id: typeId })
      .onConflict((oc) => oc.column('project_id').doUpdateSet({ volume_type_id: typeId })).execute();
  }

  /** Clears a project's default type; false if none was set. */
  async deleteProjectDefault(q: Q, projectId: string): Promise<boolean> {
    this.memo.changed(q);
    const r = await q.deleteFrom('default_volume_types').where('project_id', '=', projectId).executeTakeFirst();
    return r.numDeletedRows > 0n;
  }

  /** Whether any project uses the type as its default. */
  async isProjectDefault(q: Q, id: string): Promise<boolean> {
    return (await q.selectFrom('default_volume_types').select('project_id').where('volume_type_id', '=', id).limit(1).executeTakeFirst()) !== undefined;
  }

  /** Names of every type (for per-type quota resources). */
  async names(q: Q): Promise<string[]> {
    return (await q.selectFrom('volume_types').select('name').execute()).map((r) => r.name);
  }

  private async withSpecs(q: Q, rows: VolumeTypeRow[]): Promise<VolumeType[]> {
    const specs = await specsOf(q, TABLES, rows.map((r) => r.id));
    return rows.map((r) => ({ ...r, extra_specs: specs.get(r.id)! }));
  }

}
