/**
 * The group manager owns every status transition of generic volume groups
 * (3.13); its `snapshots` ({@link GroupSnapshotManager}) those of group
 * snapshots (3.14). Like the volume manager, each `request*` method checks
 * and changes rows under their locks, takes quota and writes the job in one
 * transaction; the volume service runs the handlers (`group-handlers.ts`). A
 * group has no storage of its own: it is created `available`, and its pool is
 * the pool its first volume is placed in.
 */
import type { Caller, Clock } from '../common/index.ts';
import { isoAt, newId } from '../common/index.ts';
import type {
  Db, GroupRepository, GroupRow, GroupSnapshotRepository, GroupTypeRepository, SnapshotRepository, VolumeRepository, VolumeRow, VolumeTypeRepository,
} from '../db/index.ts';
import { InvalidInputError, InvalidStatusError, NotFoundError } from '../errors/index.ts';
import type { JobQueue, Tx } from '../jobs/index.ts';
import type { QuotaEngine } from '../quota/index.ts';
import type { GroupJobKinds } from './group-jobs.ts';
import { cannotAdd, groupVolumeTypeIds, lockGroup, REMOVABLE_STATUSES } from './group-membership.ts';
import { removeVolume } from './lifecycle.ts';
import { typeNameOf, volumeQuota } from './volume-quota.ts';
import { DELETABLE_STATUSES, type VolumeManager } from './volume-manager.ts';
import { volumeTarget } from './volume-jobs.ts';
import { GroupSnapshotManager } from './group-snapshot-manager.ts';

/** What the manager needs. */
export interface GroupManagerDeps {
  db: Db;
  queue: JobQueue;
  clock: Clock;
  quotas: QuotaEngine;
  volumes: VolumeRepository;
  snapshots: SnapshotRepository;
  types: VolumeTypeRepository;
  groups: GroupRepository;
  groupSnapshots: GroupSnapshotRepository;
  groupTypes: GroupTypeRepository;
  groupKinds: GroupJobKinds;
  /** Zones, busy and frozen checks, and where an in-use volume's snapshot runs. */
  volumeManager: VolumeManager;
}

/** A group create request after validation. */
export interface CreateGroupInput {
  name: string | null;
  description: string | null;
  /** Group type id or name. */
  groupType: string;
  /** Volume type ids or names. */
  volumeTypes: string[];
  availabilityZone: string | null;
}

/** A create-from-source request: exactly one of the sources. */
export interface CreateGroupFromSourceInput {
  name: string | null;
  description: string | null;
  groupSnapshotId?: string;
  sourceGroupId?: string;
}

/** A group update after validation: volume ids already split. */
export interface UpdateGroupInput {
  name?: string | null;
  description?: string | null;
  addVolumes: string[];
  removeVolumes: string[];
}

/** API-side group and group snapshot operations. */
export class GroupManager {
  /** Group snapshots: taken, deleted and reset here. */
  readonly snapshots: GroupSnapshotManager;

  constructor(private readonly deps: GroupManagerDeps) {
    this.snapshots = new GroupSnapshotManager(deps);
  }

  /**
   * Finds a group the caller may see (admins: any project's).
   * @throws NotFoundError.
   */
  async get(caller: Caller, id: string, q: Tx = this.deps.db.kysely): Promise<GroupRow> {
    const g = await this.deps.groups.get(q, id, caller.isAdmin ? 'all' : { projectId: caller.projectId });
    if (!g) throw NotFoundError.of('Group', id);
    return g;
  }

  /**
   * Records a new, empty group: `available` at once, since a group holds no
   * storage; its volumes are scheduled into one pool as they are created.
   * @throws NotFoundError (group type, volume type), InvalidInputError (zone), QuotaExceededError.
   */
  async requestCreate(caller: Caller, input: CreateGroupInput): Promise<GroupRow> {
    const { groups, groupTypes, types } = this.deps;
    const id = newId();
    await this.deps.queue.transaction(async (tx) => {
      const gt = await groupTypes.find(tx, input.groupType, caller);
      if (!gt) throw new NotFoundError(`Group type with id ${input.groupType} could not be found.`);
      const typeIds: string[] = [];
      for (const name of input.volumeTypes) {
        const t = await types.find(tx, name, caller);
        if (!t) throw new NotFoundError(`Volume type with name ${name} could not be found.`);
        typeIds.push(t.id);
      }
      const zone = await this.deps.volumeManager.resolveZone(tx, input.availabilityZone);
      await this.deps.quotas.consume(tx, caller.projectId, { groups: 1 });
      await groups.insertWithTypes(tx, this.newRow(caller, id, { ...input, zone, groupTypeId: gt.id, status: 'available' }), typeIds);
    });
    return (await groups.get(this.deps.db.kysely, id))!;
  }

  /**
   * Creates a group from a group snapshot (each member a volume from its
   * snapshot) or from another group (each member a clone), in the source's
   * pool, and queues the work for that backend.
   * @throws NotFoundError (source), InvalidInputError (empty source), InvalidStatusError, QuotaExceededError.
   */
  async requestCreateFromSource(caller: Caller, input: CreateGroupFromSourceInput): Promise<GroupRow> {
    const { groups, volumes, clock, queue } = this.deps;
    const id = newId();
    await queue.transaction(async (tx, enqueue) => {
      let source: GroupRow;
      const members: Array<{ from: VolumeRow; sizeGiB: number; typeId: string | null; snapshotId: string | null }> = [];
      if (input.groupSnapshotId) {
        const gs = await this.snapshots.get(caller, input.groupSnapshotId, tx);
        source = await lockGroup(this.deps.db, tx, caller, gs.group_id);
        if (gs.status !== 'available') throw new InvalidStatusError(`Invalid group snapshot: Group snapshot ${gs.id} status must be available, but current status is: ${gs.status}.`);
        for (const s of await this.deps.groupSnapshots.snapshotsOf(tx, gs.id)) {
          members.push({ from: (await volumes.get(tx, s.volume_id))!, sizeGiB: s.volume_size, typeId: s.volume_type_id, snapshotId: s.id });
        }
        if (members.length === 0) throw new InvalidInputError('Invalid input received: Group snapshot is empty. No group will be created.');
      } else {
        source = await lockGroup(this.deps.db, tx, caller, input.sourceGroupId!);
        if (source.status !== 'available') throw new InvalidStatusError(`Invalid group: Source group ${source.id} status must be available, but current status is: ${source.status}.`);
        const vols = await groups.members(tx, source.id);
        await this.deps.db.lockRows(tx, 'volumes', vols.map((v) => v.id));
        for (const v of vols) {
          if (v.status !== 'available') throw new InvalidStatusError(`Invalid volume: Source volume ${v.id} status must be available, but current status is: ${v.status}.`);
          await this.deps.volumeManager.refuseIfBusy(tx, v.id, { reading: true });
          members.push({ from: v, sizeGiB: v.size, typeId: v.volume_type_id, snapshotId: null });
        }
        if (members.length === 0) throw new InvalidInputError('Invalid input received: Source Group is empty. No group will be created.');
      }
      await this.deps.quotas.consume(tx, caller.projectId, { groups: 1 });
      const row = this.newRow(caller, id, {
        name: input.name, description: input.description, zone: source.availability_zone, groupTypeId: source.group_type_id, status: 'creating',
      });
      await groups.insertWithTypes(tx, {
        ...row, host: source.host, cluster_name: source.cluster_name,
        group_snapshot_id: input.groupSnapshotId ?? null, source_group_id: input.groupSnapshotId ? null : source.id,
      }, await groupVolumeTypeIds(tx, source.id));
      for (const m of members) {
        const typeName = await typeNameOf(this.deps.types, tx, m.typeId);
        await this.deps.quotas.consume(tx, caller.projectId, volumeQuota(m.sizeGiB, typeName), m.sizeGiB);
        await volumes.insert(tx, {
          ...m.from, id: newId(), project_id: caller.projectId, user_id: caller.userId, name: m.from.name, description: m.from.description,
          size: m.sizeGiB, status: 'creating', attach_status: 'detached', volume_type_id: m.typeId,
          snapshot_id: m.snapshotId, source_volid: m.snapshotId ? null : m.from.id, provider_location: null,
          created_at: isoAt(clock.now()), updated_at: null, launched_at: null, group_id: id,
        }, {});
      }
      await enqueue(this.deps.groupKinds.createFromSource, { target: volumeTarget(source.cluster_name!), resourceId: id, requestId: caller.requestId, payload: { groupId: id } });
    });
    return (await groups.get(this.deps.db.kysely, id))!;
  }

  /**
   * Renames a group, and adds or removes volumes (ids), at once.
   * @throws NotFoundError, InvalidInputError (a volume that cannot join or leave, nothing to do), InvalidStatusError.
   */
  async requestUpdate(caller: Caller, id: string, input: UpdateGroupInput): Promise<void> {
    const { db, groups, volumes } = this.deps;
    await this.deps.queue.transaction(async (tx) => {
      const g = await lockGroup(db, tx, caller, id);
      const both = input.addVolumes.filter((v) => input.removeVolumes.includes(v));
      if (both.length) throw new InvalidInputError(`Invalid input received: UUIDs ${both.join(', ')} are in both add and remove volume list.`);
      const changesMembers = input.addVolumes.length > 0 || input.removeVolumes.length > 0;
      if (changesMembers && g.status !== 'available') throw new InvalidStatusError('Invalid group: Group status must be available.');
      await db.lockRows(tx, 'volumes', [...input.addVolumes, ...input.removeVolumes]);
      const add: string[] = [];
      for (const vid of input.addVolumes) {
        const v = await volumes.get(tx, vid, caller.isAdmin ? 'all' : { projectId: caller.projectId });
        if (v?.group_id === g.id) continue; // already a member: nothing to do, as in Cinder
        const why = await cannotAdd(tx, g, v, vid);
        if (why) throw new InvalidInputError(`Invalid volume: ${why}`);
        if (g.host === null) await groups.claimHost(tx, g.id, v!.host!, v!.cluster_name);
        add.push(vid);
      }
      const remove: string[] = [];
      for (const vid of input.removeVolumes) {
        const v = await volumes.get(tx, vid);
        if (!v || v.group_id !== g.id) throw new InvalidInputError(`Invalid volume: Cannot remove volume ${vid} from group ${g.id} because it is not in the group.`);
        if (!(REMOVABLE_STATUSES as readonly string[]).includes(v.status)) {
          throw new InvalidInputError(`Invalid volume: Cannot remove volume ${vid} from group ${g.id} because volume is in an invalid state: ${v.status}. Valid states are: ${REMOVABLE_STATUSES.join(', ')}.`);
        }
        remove.push(vid);
      }
      const set: { name?: string | null; description?: string | null } = {};
      if (input.name !== undefined && input.name !== g.name) set.name = input.name;
      if (input.description !== undefined && input.description !== g.description) set.description = input.description;
      if (!add.length && !remove.length && Object.keys(set).length === 0) {
        throw new InvalidInputError(`Invalid group: Cannot update group ${g.id} because no valid name, description, add_volumes, or remove_volumes were provided.`);
      }
      await groups.setMembership(tx, add, g.id);
      await groups.setMembership(tx, remove, null);
      await groups.update(tx, g.id, set);
    });
  }

  /**
   * Deletes a group. Its volumes go with it only with `deleteVolumes`; they
   * must be detached and have no snapshots, and the group no group snapshots.
   * The volumes' storage is removed by the `group.delete` job; a group that
   * never had a volume placed goes at once.
   * @throws NotFoundError, InvalidInputError (Cinder's InvalidGroup: 400).
   */
  async requestDelete(caller: Caller, id: string, deleteVolumes: boolean): Promise<void> {
    const { db, groups, volumes, snapshots } = this.deps;
    await this.deps.queue.transaction(async (tx, enqueue) => {
      const g = await lockGroup(db, tx, caller, id);
      const members = await groups.members(tx, g.id);
      await db.lockRows(tx, 'volumes', members.map((v) => v.id));
      if (!deleteVolumes && !['available', 'error'].includes(g.status)) {
        throw new InvalidInputError(`Invalid group: Group status must be available or error, but current status is: ${g.status}.`);
      }
      if (deleteVolumes && ['creating', 'deleting'].includes(g.status)) {
        throw new InvalidInputError(`Invalid group: Group ${g.id} is ${g.status}; wait for it to finish.`);
      }
      if ((await this.deps.groupSnapshots.ofGroup(tx, g.id)).length > 0) throw new InvalidInputError('Invalid group: Group has existing snapshots.');
      if (members.length > 0 && !deleteVolumes) {
        throw new InvalidInputError(`Invalid group: Group ${g.id} still contains volumes. The delete-volumes flag is required to delete it.`);
      }
      for (const v of members) {
        if (v.attach_status === 'attached') throw new InvalidInputError(`Invalid group: Volume in group ${g.id} is attached. Need to detach first.`);
        if ((await snapshots.ofVolume(tx, v.id)).length > 0) throw new InvalidInputError('Invalid group: Volume in group still has dependent snapshots.');
        if (![...DELETABLE_STATUSES, 'error_deleting'].includes(v.status)) {
          throw new InvalidInputError(`Invalid group: Volume ${v.id} in group ${g.id} is ${v.status}; it can be deleted once that settles.`);
        }
        await this.deps.volumeManager.refuseIfBusy(tx, v.id);
        await this.deps.volumeManager.releaseForRemoval(tx, enqueue, v, caller.requestId);
        if (!(await volumes.transition(tx, { id: v.id, from: [v.status], to: 'deleting', requestId: caller.requestId }))) {
          throw new InvalidStatusError(`Invalid volume: Volume ${v.id} status changed concurrently; try again.`);
        }
      }
      if (!(await groups.transition(tx, { id: g.id, from: [g.status], to: 'deleting', requestId: caller.requestId }))) {
        throw new InvalidStatusError(`Invalid group: Group ${g.id} status changed concurrently; try again.`);
      }
      const placed = members.filter((v) => v.cluster_name !== null);
      if (placed.length === 0) {
        // Nothing reached a backend: only rows to remove.
        for (const v of members) await removeVolume(this.deps, tx, { ...v, status: 'deleting' }, caller.requestId);
        await this.removeGroupRow(tx, g, caller.requestId);
        return;
      }
      await enqueue(this.deps.groupKinds.delete, { target: volumeTarget(placed[0]!.cluster_name!), resourceId: g.id, requestId: caller.requestId, payload: { groupId: g.id } });
    });
  }

  /** Deletes a `deleting` group's row and gives its quota back, in `tx`. */
  async removeGroupRow(tx: Tx, g: GroupRow, requestId: string | null): Promise<void> {
    if (await this.deps.groups.deleteRow(tx, g.id, 'deleting', requestId)) await this.deps.quotas.release(tx, g.project_id, { groups: 1 });
  }

  /**
   * An admin's `reset_status` of a group (3.20): sets it whatever it is now.
   * @throws NotFoundError.
   */
  async resetStatus(caller: Caller, id: string, status: string): Promise<void> {
    await this.deps.queue.transaction(async (tx) => {
      const g = await lockGroup(this.deps.db, tx, caller, id);
      await this.deps.groups.transition(tx, { id: g.id, from: [g.status], to: status, requestId: caller.requestId });
    });
  }

  private newRow(caller: Caller, id: string, g: { name: string | null; description: string | null; zone: string; groupTypeId: string; status: string }): GroupRow {
    return {
      id, project_id: caller.projectId, user_id: caller.userId, name: g.name, description: g.description, status: g.status,
      availability_zone: g.zone, group_type_id: g.groupTypeId, host: null, cluster_name: null, group_snapshot_id: null,
      source_group_id: null, replication_status: 'disabled', created_at: isoAt(this.deps.clock.now()), updated_at: null,
    };
  }
}
