/**
 * Who may join a group: the checks a volume passes to be created into a group
 * (3.13) or added to one, shared by the volume and group managers. Each runs
 * inside the caller's transaction after locking the group's row, so a group
 * cannot be deleted or snapshotted half-way through a volume joining it.
 */
import type { Caller } from '../common/index.ts';
import type { Db, GroupRow, VolumeRow } from '../db/index.ts';
import { InvalidInputError, InvalidStatusError, NotFoundError } from '../errors/index.ts';
import type { Tx } from '../jobs/index.ts';

/** Statuses a volume may be added to a group from (Cinder's list). */
export const ADDABLE_STATUSES = ['available', 'in-use'] as const;
/** Statuses a volume may be removed from a group from (Cinder's list). */
export const REMOVABLE_STATUSES = ['available', 'in-use', 'error', 'error_deleting'] as const;

/**
 * Locks a group's row for the rest of `tx`, then reads it, if the caller may see it.
 * @throws NotFoundError.
 */
export async function lockGroup(db: Db, tx: Tx, caller: Caller, id: string): Promise<GroupRow> {
  await db.lockRows(tx, 'groups', [id]);
  let s = tx.selectFrom('groups').selectAll().where('id', '=', id);
  if (!caller.isAdmin) s = s.where('project_id', '=', caller.projectId);
  const g = await s.executeTakeFirst();
  if (!g) throw NotFoundError.of('Group', id);
  return g;
}

/** The volume type ids a group's volumes may have. */
export async function groupVolumeTypeIds(tx: Tx, groupId: string): Promise<string[]> {
  return (await tx.selectFrom('group_volume_types').select('volume_type_id').where('group_id', '=', groupId).execute()).map((r) => r.volume_type_id);
}

/**
 * Checks that a new volume of type `typeId` may be created into group
 * `groupId`, and returns the group (locked). The type must have been asked
 * for by name or id, as Cinder requires, and be one of the group's.
 * @throws NotFoundError (group), InvalidInputError (type), InvalidStatusError (group not available).
 */
export async function checkNewMember(db: Db, tx: Tx, caller: Caller, groupId: string, typeId: string, typeRequested: boolean): Promise<GroupRow> {
  const g = await lockGroup(db, tx, caller, groupId);
  if (!typeRequested) throw new InvalidInputError('Invalid input received: volume_type must be provided when creating a volume in a group.');
  if (!(await groupVolumeTypeIds(tx, g.id)).includes(typeId)) {
    throw new InvalidInputError(`Invalid input received: Invalid volume_type provided: ${typeId} (requested type must be supported by this group).`);
  }
  if (g.status !== 'available') throw new InvalidStatusError(`Invalid group: Group ${g.id} status must be available, but current status is: ${g.status}.`);
  return g;
}

/**
 * Why `v` cannot be added to group `g`, in Cinder's words, or undefined.
 * The caller has locked both rows.
 */
export async function cannotAdd(tx: Tx, g: GroupRow, v: VolumeRow | undefined, volumeId: string): Promise<string | undefined> {
  const prefix = `Cannot add volume ${volumeId} to group ${g.id}`;
  if (!v) return `${prefix} because volume cannot be found.`;
  if (v.group_id) return `${prefix} because it is already in group ${v.group_id}.`;
  if (v.project_id !== g.project_id) return `${prefix} as they belong to different projects.`;
  if (!v.volume_type_id) return `${prefix} because it has no volume type.`;
  if (!(await groupVolumeTypeIds(tx, g.id)).includes(v.volume_type_id)) {
    return `${prefix} because volume type ${v.volume_type_id} is not supported by the group.`;
  }
  if (!(ADDABLE_STATUSES as readonly string[]).includes(v.status)) {
    return `${prefix} because volume is in an invalid state: ${v.status}. Valid states are: ${ADDABLE_STATUSES.join(', ')}.`;
  }
  // Every member lives in one pool: a group snapshot then runs on one backend.
  if (g.host !== null && v.host !== g.host) return `${prefix}: Volume is not local to this node (the group's volumes are in ${g.host}).`;
  return undefined;
}
