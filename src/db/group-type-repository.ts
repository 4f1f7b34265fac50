/**
 * Queries on group types (3.11), their group specs and project access.
 * Shaped like {@link VolumeTypeRepository}: a group type is a named set of
 * specs that groups are created with.
 */
import type { Kysely } from 'kysely';
import type { Clock } from '../common/index.ts';
import { isoAt, newId } from '../common/index.ts';
import type { Database, GroupTypeRow } from './schema.ts';
import { deleteSpec, findType, putSpecs, specsOf, visibleTypes, type TypeTables, type TypeViewer } from './type-catalogue.ts';

type Q = Kysely<Database>;

/** Where group types live. */
const TABLES: TypeTables = { table: 'group_types', specTable: 'group_type_specs', projectTable: 'group_type_projects', fk: 'group_type_id' };

/** A group type with its group specs. */
export interface GroupType extends GroupTypeRow { group_specs: Record<string, string> }

/** Repository over group types. */
export class GroupTypeRepository {
  constructor(private readonly clock: Clock) {}

  /**
   * Group types `viewer` may see, by name. For admins `isPublic` picks public
   * or private ones (undefined: all); others get the public ones and those
   * shared with their project.
   */
  async list(q: Q, viewer: TypeViewer, isPublic?: boolean): Promise<GroupType[]> {
    return this.withSpecs(q, await visibleTypes<GroupTypeRow>(q, TABLES, viewer, isPublic));
  }

  /** A group type by id or, failing that, by name, if `viewer` may see it. */
  async find(q: Q, idOrName: string, viewer: TypeViewer): Promise<GroupType | undefined> {
    const row = await findType<GroupTypeRow>(q, TABLES, idOrName, viewer);
    return row && (await this.withSpecs(q, [row]))[0];
  }

  /** Creates a group type; the caller checked the name is free. */
  async create(q: Q, t: { name: string; description: string | null; isPublic: boolean; specs: Record<string, string> }): Promise<string> {
    const id = newId();
    await q.insertInto('group_types').values({
      id, name: t.name, description: t.description, is_public: t.isPublic ? 1 : 0, created_at: isoAt(this.clock.now()), updated_at: null,
    }).execute();
    await this.setSpecs(q, id, t.specs);
    return id;
  }

  /** Whether a group type of this name exists (other than `exceptId`). */
  async nameTaken(q: Q, name: string, exceptId?: string): Promise<boolean> {
    let s = q.selectFrom('group_types').select('id').where('name', '=', name);
    if (exceptId) s = s.where('id', '!=', exceptId);
    return (await s.executeTakeFirst()) !== undefined;
  }

  /** Updates name, description or visibility. */
  async update(q: Q, id: string, set: { name?: string; description?: string | null; is_public?: number }): Promise<void> {
    await q.updateTable('group_types').set({ ...set, updated_at: isoAt(this.clock.now()) }).where('id', '=', id).execute();
  }

  /** Whether any group or group snapshot uses the group type. */
  async inUse(q: Q, id: string): Promise<boolean> {
    const group = await q.selectFrom('groups').select('id').where('group_type_id', '=', id).limit(1).executeTakeFirst();
    const snap = await q.selectFrom('group_snapshots').select('id').where('group_type_id', '=', id).limit(1).executeTakeFirst();
    return group !== undefined || snap !== undefined;
  }

  /** Deletes the group type (specs and access cascade). */
  async delete(q: Q, id: string): Promise<void> {
    await q.deleteFrom('group_types').where('id', '=', id).execute();
  }

  /** Sets the given group specs, keeping others. */
  setSpecs(q: Q, id: string, specs: Record<string, string>): Promise<void> {
    return putSpecs(q, TABLES, id, specs);
  }

  /** Deletes one group spec; false if absent. */
  deleteSpec(q: Q, id: string, key: string): Promise<boolean> {
    return deleteSpec(q, TABLES, id, key);
  }

  private async withSpecs(q: Q, rows: GroupTypeRow[]): Promise<GroupType[]> {
    const specs = await specsOf(q, TABLES, rows.map((r) => r.id));
    return rows.map((r) => ({ ...r, group_specs: specs.get(r.id)! }));
  }

}
