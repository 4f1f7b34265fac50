/**
 * The job kinds of generic volume groups and group snapshots, known to every
 * role. Each runs on the cluster that holds the group's volumes and works on
 * every member at once; its `onFailure` moves the group (or group snapshot)
 * and every member still in the transitional status to the error status, with
 * a user message per member, in the failing transaction.
 */
import { isoAt } from '../common/index.ts';
import type { Db, GroupRepository, GroupSnapshotRepository } from '../db/index.ts';
import type { JobKind, SweepRule, Tx } from '../jobs/index.ts';
import { detailFor, MESSAGE_DETAILS, type MessageDetail } from '../messages/index.ts';
import { failResource, type VolumeJobDeps } from './volume-jobs.ts';

/** `group.create_from_src`: make every `creating` member of a new group from its snapshot or source volume. */
export interface GroupPayload { groupId: string }
/** `group_snapshot.create` / `group_snapshot.delete`. */
export interface GroupSnapshotPayload { groupSnapshotId: string }

/** Every group kind. */
export interface GroupJobKinds {
  /** `group.delete`: delete every `deleting` member volume, then the group. */
  delete: JobKind<GroupPayload>;
  createFromSource: JobKind<GroupPayload>;
  /** Snapshot every member with the writes of all of them held at once. */
  snapshotCreate: JobKind<GroupSnapshotPayload>;
  /** Delete every member snapshot, then the group snapshot. */
  snapshotDelete: JobKind<GroupSnapshotPayload>;
}

/** Everything the failure handling touches. */
export interface GroupJobDeps extends VolumeJobDeps {
  groups: GroupRepository;
  groupSnapshots: GroupSnapshotRepository;
}

/** Transitional statuses of groups and the status each ends in when its work fails. */
export const GROUP_TRANSITIONAL: Record<string, string> = { creating: 'error', deleting: 'error_deleting' };
/** Transitional statuses of group snapshots. */
export const GROUP_SNAPSHOT_TRANSITIONAL: Record<string, string> = { creating: 'error', deleting: 'error_deleting' };

function parser<P>(field: string) {
  return (payload: unknown, version: number): P => {
    if (version !== 1) throw new Error(`payload version ${version} is not readable`);
    if (payload === null || typeof payload !== 'object' || typeof (payload as Record<string, unknown>)[field] !== 'string') {
      throw new Error(`payload field ${field} must be a string`);
    }
    return payload as P;
  };
}

/**
 * Fails a group stuck in `from` and every member volume still in `from`
 * (each with its user message; the group's status event carries the reason).
 * Returns false when the group was not in `from` (someone else settled it).
 */
export async function failGroup(deps: GroupJobDeps, tx: Tx, groupId: string, from: string, detail: MessageDetail, requestId: string | null): Promise<boolean> {
  for (const v of await deps.groups.members(tx, groupId)) {
    if (v.status === from) await failResource(deps, tx, { volumeId: v.id }, from, detail, requestId);
  }
  // Cinder's catalogue has no action for a group: the status event says why in the detail's words alone.
  return deps.groups.transition(tx, { id: groupId, from: [from], to: GROUP_TRANSITIONAL[from]!, requestId, detail: { reason: detail.text } });
}

/** Fails a group snapshot stuck in `from` and every member snapshot still in `from`. */
export async function failGroupSnapshot(deps: GroupJobDeps, tx: Tx, id: string, from: string, detail: MessageDetail, requestId: string | null): Promise<boolean> {
  for (const s of await deps.groupSnapshots.snapshotsOf(tx, id)) {
    if (s.status === from) await failResource(deps, tx, { snapshotId: s.id }, from, detail, requestId);
  }
  return deps.groupSnapshots.transition(tx, { id, from: [from], to: GROUP_SNAPSHOT_TRANSITIONAL[from]!, requestId, detail: { reason: detail.text } });
}

/** Builds the group job kinds. */
export function groupJobKinds(deps: GroupJobDeps): GroupJobKinds {
  const group = (kind: string, from: string): JobKind<GroupPayload> => ({
    kind, version: 1, minVersion: 1, resourceType: 'group', parse: parser<GroupPayload>('groupId'),
    async onFailure(tx, p, job, err) { await failGroup(deps, tx, p.groupId, from, detailFor(err), job.request_id); },
  });
  const groupSnapshot = (kind: string, from: string): JobKind<GroupSnapshotPayload> => ({
    kind, version: 1, minVersion: 1, resourceType: 'group_snapshot', parse: parser<GroupSnapshotPayload>('groupSnapshotId'),
    async onFailure(tx, p, job, err) { await failGroupSnapshot(deps, tx, p.groupSnapshotId, from, detailFor(err), job.request_id); },
  });
  return {
    delete: group('group.delete', 'deleting'),
    createFromSource: group('group.create_from_src', 'creating'),
    snapshotCreate: groupSnapshot('group_snapshot.create', 'creating'),
    snapshotDelete: groupSnapshot('group_snapshot.delete', 'deleting'),
  };
}

/**
 * The sweeper's rules for groups and group snapshots: one left in a
 * transitional status with no queued or running job is failed, with its members.
 */
export function stuckGroupRules(db: Db, deps: GroupJobDeps): SweepRule[] {
  const rule = (name: string, repo: GroupRepository | GroupSnapshotRepository, statuses: string[], fail: typeof failGroup): SweepRule => ({
    name,
    async sweep(olderThanMs) {
      let moved = 0;
      for (const row of await repo.stuck(db.kysely, statuses, isoAt(olderThanMs))) {
        if (await db.kysely.transaction().execute((tx) => fail(deps, tx, row.id, row.status, MESSAGE_DETAILS.INTERRUPTED, null))) moved++;
      }
      return moved;
    },
  });
  return [
    rule('stuck-groups', deps.groups, Object.keys(GROUP_TRANSITIONAL), failGroup),
    rule('stuck-group-snapshots', deps.groupSnapshots, Object.keys(GROUP_SNAPSHOT_TRANSITIONAL), failGroupSnapshot),
  ];
}
