/**
 * Group snapshots (3.14): one member snapshot per volume of a group, all of
 * one instant. Like the group manager, each `request*` method checks and
 * changes rows under their locks, takes quota and writes the job in one
 * transaction; the volume service takes the snapshot (`group-handlers.ts`).
 */
import type { Caller } from '../common/index.ts';
import { isoAt, newId } from '../common/index.ts';
import type { GroupRow, GroupSnapshotRow, SnapshotRow } from '../db/index.ts';
import { InvalidInputError, InvalidStatusError, NotFoundError } from '../errors/index.ts';
import type { Tx } from '../jobs/index.ts';
import type { GroupManagerDeps } from './group-manager.ts';
import { lockGroup } from './group-membership.ts';
import { snapshotQuota, typeNameOf } from './volume-quota.ts';
import { volumeTarget } from './volume-jobs.ts';

/** Statuses from which a group snapshot may be deleted. */
const GROUP_SNAPSHOT_DELETABLE = ['available', 'error'];

/** API-side group snapshot operations. */
export class GroupSnapshotManager {
  constructor(private readonly deps: GroupManagerDeps) {}

  /**
   * Finds a group snapshot the caller may see.
   * @throws NotFoundError.
   */
  async get(caller: Caller, id: string, q: Tx = this.deps.db.kysely): Promise<GroupSnapshotRow> {
    const s = await this.deps.groupSnapshots.get(q, id, caller.isAdmin ? 'all' : { projectId: caller.projectId });
    if (!s) throw NotFoundError.of('GroupSnapshot', id);
    return s;
  }

  /**
   * Records a group snapshot and one member snapshot per volume, all
   * `creating`, and queues the consistent snapshot for the group's backend:
   * on the member that serves the group's NBD exports when some are attached,
   * so that member can hold all their writes at once.
   * @throws NotFoundError, InvalidStatusError, InvalidInputError (a local attachment that cannot be quiesced), QuotaExceededError.
   */
  async requestSnapshot(caller: Caller, input: { groupId: string; name: string | null; description: string | null }): Promise<GroupSnapshotRow> {
    const { db, groups, snapshots, clock, volumeManager } = this.deps;
    const id = newId();
    await this.deps.queue.transaction(async (tx, enqueue) => {
      const g = await lockGroup(db, tx, caller, input.groupId);
      if (g.status !== 'available') throw new InvalidStatusError(`Invalid group: Group ${g.id} status must be available, but current status is: ${g.status}.`);
      const members = await groups.members(tx, g.id);
      await db.lockRows(tx, 'volumes', members.map((v) => v.id));
      const targets = new Set<string>();
      for (const v of members) {
        if (!['available', 'in-use'].includes(v.status)) {
          throw new InvalidStatusError(`Invalid volume: Volume ${v.id} in group ${g.id} status must be available or in-use, but current status is: ${v.status}.`);
        }
        await volumeManager.refuseIfBusy(tx, v.id, { reading: true });
        await volumeManager.refuseIfFrozen(tx, v);
        if (v.status === 'in-use') {
          await volumeManager.refuseIfUnquiescable(tx, v);
          targets.add(await volumeManager.snapshotTarget(tx, v));
        }
      }
      const exporters = [...targets].filter((t) => t.startsWith('member:'));
      if (exporters.length > 1) {
        throw new InvalidInputError(`Invalid input received: the attached volumes of group ${g.id} are exported by several services (${exporters.join(', ')}); their writes can only be held together on one.`);
      }
      await groupSnapshotsInsert(this.deps, tx, caller, id, g, input, isoAt(clock.now()));
      for (const v of members) {
        await this.deps.quotas.consume(tx, caller.projectId, snapshotQuota(v.size, await typeNameOf(this.deps.types, tx, v.volume_type_id)));
        const row = {
          id: newId(), project_id: caller.projectId, user_id: caller.userId, volume_id: v.id, volume_size: v.size,
          volume_type_id: v.volume_type_id, name: input.name, description: input.description, status: 'creating',
          created_at: isoAt(clock.now()), updated_at: null, group_snapshot_id: id,
        };
        // A snapshot shares its volume's encryption key, where volumes have one.
        await snapshots.insert(tx, { ...row, ...('encryption_key_id' in v ? { encryption_key_id: v.encryption_key_id } : {}) } as SnapshotRow, {});
      }
      const target = exporters[0] ?? (members[0] ? volumeTarget(members[0].cluster_name!) : undefined);
      if (target === undefined) {
        // An empty group: nothing to snapshot.
        await this.deps.groupSnapshots.transition(tx, { id, from: ['creating'], to: 'available', requestId: caller.requestId });
        return;
      }
      await enqueue(this.deps.groupKinds.snapshotCreate, { target, resourceId: id, requestId: caller.requestId, payload: { groupSnapshotId: id } });
    });
    return (await this.deps.groupSnapshots.get(db.kysely, id))!;
  }

  /**
   * Moves a group snapshot and its member snapshots to `deleting` and queues
   * the driver work.
   * @throws NotFoundError, InvalidStatusError (wrong status, a group being created from it).
   */
  async requestSnapshotDelete(caller: Caller, id: string): Promise<void> {
    const { db, groupSnapshots, snapshots } = this.deps;
    await this.deps.queue.transaction(async (tx, enqueue) => {
      const gs0 = await this.get(caller, id, tx);
      const g = await lockGroup(db, tx, { ...caller, isAdmin: true }, gs0.group_id);
      const gs = (await groupSnapshots.get(tx, id))!;
      const using = await tx.selectFrom('groups').select('id').where('group_snapshot_id', '=', id).where('status', '=', 'creating').executeTakeFirst();
      if (!GROUP_SNAPSHOT_DELETABLE.includes(gs.status) || using) {
        throw new InvalidStatusError('Invalid group snapshot: GroupSnapshot status must be available or error, and no Group can be currently using it as source for its creation.');
      }
      const members = await groupSnapshots.snapshotsOf(tx, id);
      await db.lockRows(tx, 'volumes', members.map((s) => s.volume_id));
      for (const s of members) {
        const copying = await tx.selectFrom('volumes').select('id').where('snapshot_id', '=', s.id).where('status', '=', 'creating').executeTakeFirst();
        if (copying) throw new InvalidStatusError(`Invalid snapshot: volume ${copying.id} is being created from snapshot ${s.id}.`);
        await snapshots.transition(tx, { id: s.id, from: [s.status], to: 'deleting', requestId: caller.requestId });
      }
      await groupSnapshots.transition(tx, { id, from: [gs.status], to: 'deleting', requestId: caller.requestId });
      const cluster = members.length ? (await this.deps.volumes.get(tx, members[0]!.volume_id))?.cluster_name ?? g.cluster_name : g.cluster_name;
      if (members.length === 0 || !cluster) {
        await groupSnapshots.deleteRow(tx, id, 'deleting', caller.requestId);
        return;
      }
      await enqueue(this.deps.groupKinds.snapshotDelete, { target: volumeTarget(cluster), resourceId: id, requestId: caller.requestId, payload: { groupSnapshotId: id } });
    });
  }

  /**
   * An admin's `reset_status` of a group snapshot (3.19).
   * @throws NotFoundError.
   */
  async resetSnapshotStatus(caller: Caller, id: string, status: string): Promise<void> {
    await this.deps.queue.transaction(async (tx) => {
      const gs = await this.get(caller, id, tx);
      await lockGroup(this.deps.db, tx, caller, gs.group_id);
      await this.deps.groupSnapshots.transition(tx, { id, from: [(await this.deps.groupSnapshots.get(tx, id))!.status], to: status, requestId: caller.requestId });
    });
  }
}

/** Inserts the group snapshot row. */
async function groupSnapshotsInsert(
  deps: GroupManagerDeps, tx: Tx, caller: Caller, id: string, g: GroupRow, input: { name: string | null; description: string | null }, now: string,
): Promise<void> {
  await deps.groupSnapshots.insert(tx, {
    id, project_id: caller.projectId, user_id: caller.userId, group_id: g.id, group_type_id: g.group_type_id,
    name: input.name, description: input.description, status: 'creating', created_at: now, updated_at: null,
  }, {});
}
