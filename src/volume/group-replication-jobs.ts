/**
 * The job kinds of group replication (issue 16 part 3, Cinder's 3.38
 * `enable_replication`, `disable_replication` and `failover_replication` of
 * a group) and their handlers. They reuse the volume replication of
 * `replication-jobs.ts` and `replicator.ts`: the same secondary copies,
 * exports and replica rows, and the same fences; what a group adds is that
 * its members' asynchronous points are one **group point** (taken with every
 * member's writes held at once, `Replicator.shipGroupNow`), and that its
 * members fail over and back together, in one transaction.
 *
 * | kind | target | does |
 * | --- | --- | --- |
 * | `group.replication_enable` v1 | `volume:<the group's cluster>` | waits for every member's secondary copy, ships a first group point, then the group and its members are `enabled` |
 * | `group.replication_disable` v1 | `volume:<the group's cluster>` | waits for a group point being shipped, then the group and its members are `disabled` (the copies stay, so enabling again ships only what changed) |
 * | `group.replication_failover` v1 | `volume:<the cluster that becomes the primary>` | failover: every member becomes its copy's (the copies all of one group point), exports fenced; failback (`default`): a last group point with the members' writes held, then every member moves back |
 *
 * Statuses move as Cinder's: the API sets the group and its members
 * `enabling`, `disabling` or `failing-over`; the job ends them `enabled`,
 * `disabled`, `failed-over` (`enabled` after a failback); a job that fails
 * for good sets the group and each member still in the transitional status
 * `error`, with a user message per member.
 *
 * On a backend that replicates itself (RBD's rbd-mirror, `supportsBackendReplication`)
 * there are no secondary copies of Basalt's: enabling puts every member
 * under the backend's replication and takes a first group point
 * (`groupPointInDriver`: each member's mirror snapshot with the writes of
 * all held); failover and failback run on the group's own backend, which
 * promotes the members' images on the other side (`moveGroupInDriver`,
 * the driver's `failOverVolumes`), the backend's other volumes staying
 * where they are. `replication-backend.ts` says how consistent such
 * a group point is.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Clock } from '../common/index.ts';
import { recordEvent, type GroupRepository, type GroupRow, type Tx, type VolumeReplicaRow, type VolumeRow } from '../db/index.ts';
import type { GuardedDriver } from '../drivers/index.ts';
import { DriverError } from '../errors/index.ts';
import type { JobHandler, JobKind } from '../jobs/index.ts';
import { detailFor, failureDetail, MESSAGE_ACTIONS, recordUserMessage, type MessageAction } from '../messages/index.ts';
import { payloadParser } from './operations/index.ts';
import { quiesceAll, withLocks } from './group-handlers.ts';
import { groupPointInDriver, mirrorModeOf, moveGroupInDriver, recordMoves } from './replication-backend.ts';
import { checkpointOldPrimary, checkpointPending, dropCheckpoint, FAILBACK_ID, promoteCopy, replicaOf, returnCopy, takeBaseline, type ReplicationDeps } from './replication-jobs.ts';
import { moveStaleExports } from './service-cleanup.ts';

/** `group.replication_enable` and `group.replication_disable`: the group. */
export interface GroupReplicationPayload { groupId: string }
/** `group.replication_failover`: the group, and the target's backend id or `default` (failback). */
export interface GroupFailoverPayload { groupId: string; backendId: string }

/** The group replication kinds (part of `ReplicationJobKinds`). */
export interface GroupReplicationJobKinds {
  groupEnable: JobKind<GroupReplicationPayload>;
  groupDisable: JobKind<GroupReplicationPayload>;
  groupFailover: JobKind<GroupFailoverPayload>;
}

/** Where a failed job's user messages go; without it, only the statuses say so. */
export interface GroupReplicationMessages { clock: Clock; messageTtlSeconds: number }

/**
 * Sets a group whose replication is in `from` to `error`, and each member
 * still in `from`, with a user message per member (Cinder's manager sets
 * both to error when the driver fails).
 */
async function failGroupReplication(tx: Tx, groupId: string, from: string, action: MessageAction, err: Parameters<typeof detailFor>[0], requestId: string | null, messages?: GroupReplicationMessages): Promise<void> {
  const members = await tx.selectFrom('volumes').select(['id', 'project_id']).where('group_id', '=', groupId).where('replication_status', '=', from).execute();
  await tx.updateTable('volumes').set({ replication_status: 'error' }).where('group_id', '=', groupId).where('replication_status', '=', from).execute();
  await tx.updateTable('groups').set({ replication_status: 'error' }).where('id', '=', groupId).where('replication_status', '=', from).execute();
  const now = messages?.clock.now() ?? Date.now();
  for (const v of members) {
    // Each member says why, as a single volume's failed replication does (docs/events.md).
    await recordEvent(tx, now, {
      projectId: v.project_id, resourceType: 'volume', resourceId: v.id, event: 'volume.replication_degraded', requestId,
      detail: { ...failureDetail('volume', action, detailFor(err)), replication_status: 'error', group_id: groupId },
    });
    if (!messages) continue;
    await recordUserMessage(tx, messages.clock, messages.messageTtlSeconds, {
      projectId: v.project_id, resourceType: 'volume', resourceId: v.id, action, detail: detailFor(err), requestId,
    });
  }
}

/** Builds the kinds. */
export function groupReplicationJobKinds(messages?: GroupReplicationMessages): GroupReplicationJobKinds {
  const group = payloadParser<GroupReplicationPayload>({ groupId: 'string' });
  const kind = (name: string, from: string, action: MessageAction): JobKind<GroupReplicationPayload> => ({
    kind: name, version: 1, minVersion: 1, resourceType: 'group', parse: group,
    async onFailure(tx, p, job, err) { await failGroupReplication(tx, p.groupId, from, action, err, job.request_id, messages); },
  });
  return {
    groupEnable: kind('group.replication_enable', 'enabling', MESSAGE_ACTIONS.REPLICATE_VOLUME),
    groupDisable: kind('group.replication_disable', 'disabling', MESSAGE_ACTIONS.REPLICATE_VOLUME),
    groupFailover: {
      kind: 'group.replication_failover', version: 1, minVersion: 1, resourceType: 'group',
      parse: payloadParser<GroupFailoverPayload>({ groupId: 'string', backendId: 'string' }),
      async onFailure(tx, p, job, err) { await failGroupReplication(tx, p.groupId, 'failing-over', MESSAGE_ACTIONS.FAILOVER_VOLUME, err, job.request_id, messages); },
    },
  };
}

/** What the group replication handlers need. */
export interface GroupReplicationDeps extends ReplicationDeps {
  groups: GroupRepository;
}

/**
 * How long a group job waits within one run for its members' copies (made
 * by the replicator and `replication.prepare` on their own time) before it
 * gives up the try: a copy being made is no failure, and the job's few
 * retries must not all pass while one is (default retry delays may be short).
 */
const COPY_WAIT_MS = 120_000;
/** How often it looks. */
const COPY_POLL_MS = 250;

/**
 * Polls `ready` until it says true, for up to {@link COPY_WAIT_MS} or until
 * the job is aborted (a shutdown: the job is taken over).
 * @throws DriverError (retryable) with `why()` when the time is up.
 */
async function waitInRun(signal: AbortSignal, ready: () => Promise<boolean>, why: () => string): Promise<void> {
  for (const end = Date.now() + COPY_WAIT_MS; !(await ready());) {
    if (Date.now() >= end || signal.aborted) throw new DriverError(why(), { retryable: true });
    await sleep(COPY_POLL_MS, undefined, { signal }).catch(() => undefined);
  }
}

/** Whether a member's copy is ready for a group point: made and exported (a synchronous one: its mirror in step). */
function copyReady(r: VolumeReplicaRow | undefined): boolean {
  return !!r && !!r.export_name && (r.mode === 'sync' ? r.state === 'enabled' : r.state !== 'creating');
}

/** Sets the group's replication status `from` → `to` and its members' `from` → `members` (default `to`), in `tx`. */
async function settle(tx: Tx, groupId: string, from: string, to: string, members = to): Promise<void> {
  await tx.updateTable('volumes').set({ replication_status: members }).where('group_id', '=', groupId).where('replication_status', '=', from).execute();
  await tx.updateTable('groups').set({ replication_status: to }).where('id', '=', groupId).where('replication_status', '=', from).execute();
}

/** Builds the handlers a volume service of `cluster` runs for group replication. */
export function groupReplicationHandlers(deps: GroupReplicationDeps, driver: GuardedDriver, cluster: string): JobHandler<any>[] { // eslint-disable-line @typescript-eslint/no-explicit-any
  const { db, groups, replicationKinds: kinds } = deps;
  const memberLocks = (members: readonly VolumeRow[]): string[] => members.map((v) => `volume-${v.id}`);

  const enable: JobHandler<GroupReplicationPayload> = {
    kind: kinds.groupEnable,
    async run(ctx, p) {
      const g = await groups.get(db.kysely, p.groupId);
      if (!g || g.replication_status !== 'enabling') return ctx.complete();
      const members = await groups.members(db.kysely, g.id);
      if (driver.capabilities.supportsBackendReplication) {
        await enableInDriver(deps, driver, members);
        // The members are copying until the backend's loop sees each copy in step (rbd-mirror replaying):
        // marked enabled at once, a group could be failed over before its copies existed.
        return ctx.complete((tx) => settle(tx, g.id, 'enabling', 'enabled', 'copying'));
      }
      // The replicator places and prepares each member's copy (enabling members included); this waits for them.
      let waiting: string[] = [];
      await waitInRun(ctx.signal, async () => {
        waiting = [];
        for (const v of members) {
          const r = await replicaOf(db.kysely, v.id);
          if (!copyReady(r) || await checkpointPending(db.kysely, kinds, r!)) waiting.push(v.id);
        }
        return waiting.length === 0;
      }, () => `Replication of group ${g.id} waits for the secondary copies of ${waiting.length} volume(s) (${waiting.join(', ')}).`);
      if (!deps.replicator) throw new DriverError('This process ships no replication points: it cannot enable a group\'s replication.');
      // The first group point: from now on the copies are all of one instant.
      await deps.replicator.shipGroupNow(g.id, driver, { quiesced: false });
      await ctx.complete((tx) => settle(tx, g.id, 'enabling', 'enabled'));
    },
  };

  const disable: JobHandler<GroupReplicationPayload> = {
    kind: kinds.groupDisable,
    async run(ctx, p) {
      const g = await groups.get(db.kysely, p.groupId);
      if (!g || g.replication_status !== 'disabling') return ctx.complete();
      // No point starts once the statuses say disabling; one being shipped holds the members' locks until it ends.
      await withLocks(deps, memberLocks(await groups.members(db.kysely, g.id)), async () => undefined);
      await ctx.complete((tx) => settle(tx, g.id, 'disabling', 'disabled'));
    },
  };

  const failover: JobHandler<GroupFailoverPayload> = {
    kind: kinds.groupFailover,
    async run(ctx, p) {
      const g = await groups.get(db.kysely, p.groupId);
      if (!g || g.replication_status !== 'failing-over') return ctx.complete();
      const back = p.backendId === FAILBACK_ID;
      if (driver.capabilities.supportsBackendReplication) {
        // The group's own backend promotes its members' images on the other side (the API sent the job here).
        const members = (await groups.members(db.kysely, g.id)).filter((v) => v.replication_status === 'failing-over');
        const failed = await withLocks(deps, memberLocks(members), () => moveGroupInDriver(deps, driver, members.map((v) => ({ id: v.id, sizeGiB: v.size })), p.backendId, ctx.log));
        await ctx.complete(async (tx) => {
          await recordMoves(deps, tx, members, failed, { cluster, backendId: p.backendId }, ctx.job.request_id);
          await settle(tx, g.id, 'failing-over', back ? 'enabled' : 'failed-over');
        });
      } else {
        if (back) await failBackGroup(deps, driver, cluster, g, ctx.job.request_id, ctx.signal);
        else await failOverGroup(deps, driver, cluster, g, p.backendId, ctx.job.request_id);
        await ctx.complete((tx) => settle(tx, g.id, 'failing-over', back ? 'enabled' : 'failed-over'));
      }
      // Hosts attached to a moved member get connection info naming a live exporter of its new backend, or its new site (rbd).
      await moveStaleExports({ db, queue: deps.queue, services: deps.services, volumes: deps.volumes, attachments: deps.attachments, serviceDownMs: deps.queue.options.serviceDownMs ?? 60_000 });
    },
  };
  return [enable, disable, failover];
}

/**
 * Enabling a group's replication on a backend that replicates itself: every
 * member is put under the backend's replication (in its type's mirror mode,
 * idempotent for one the loop put there already), then the first group point.
 * @throws DriverError from the driver (retryable while the target cannot be reached).
 */
async function enableInDriver(deps: GroupReplicationDeps, driver: GuardedDriver, members: readonly VolumeRow[]): Promise<void> {
  const refs = members.map((v) => ({ id: v.id, sizeGiB: v.size }));
  for (const v of members) {
    const type = v.volume_type_id ? await deps.types.find(deps.db.kysely, v.volume_type_id, { isAdmin: true, projectId: v.project_id }) : undefined;
    await driver.enableReplication({ id: v.id, sizeGiB: v.size }, { mode: mirrorModeOf(type) });
  }
  await groupPointInDriver(driver, deps.exports, refs);
}

/**
 * Failover of a group, on the cluster that holds its copies: with every
 * member's lock held (no group point is being shipped), each asynchronous
 * member's copy is checked to be of the same group point as the others',
 * a baseline of each copy is taken (the point the next shipment back counts
 * from), and then, in one transaction, every member becomes this cluster's,
 * its replica ships the other way once the old primary is back, and its old
 * exports are fenced; the group's host moves with them.
 * @throws DriverError (permanent) when a member has no copy here, or the copies are not all of one point.
 */
async function failOverGroup(deps: GroupReplicationDeps, driver: GuardedDriver, cluster: string, g: GroupRow, backendId: string, requestId: string | null): Promise<void> {
  const { db } = deps;
  const members = await deps.groups.members(db.kysely, g.id);
  await withLocks(deps, members.map((v) => `volume-${v.id}`), async () => {
    const moving: Array<{ v: VolumeRow; r: VolumeReplicaRow; baseline?: { id: string; volumeId: string; sizeGiB: number } }> = [];
    for (const v of members) {
      const r = await replicaOf(db.kysely, v.id);
      if (r && r.primary_cluster === cluster) continue; // moved by an earlier attempt
      if (!r || r.secondary_cluster !== cluster) throw new DriverError(`Volume ${v.id} of group ${g.id} has no secondary copy on ${cluster}.`);
      if (r.mode === 'sync' ? !r.last_point_at : !r.last_point_id) throw new DriverError(`The secondary copy of volume ${v.id} of group ${g.id} was never in step: it is not the volume.`);
      moving.push({ v, r });
    }
    const points = new Set(moving.filter((m) => m.r.mode !== 'sync').map((m) => m.r.last_point_at));
    if (points.size > 1) {
      throw new DriverError(`The secondary copies of group ${g.id} are not of one group point (${[...points].join(', ')}): failing them over would mix instants.`);
    }
    for (const m of moving) {
      // A synchronous mirror in this process (both backends here) stops writing to the old primary.
      await deps.replicator?.endMirror(m.v.id);
      m.baseline = await takeBaseline(driver, m.r, m.v);
    }
    const moved = new Set<string>();
    await deps.queue.transaction(async (tx, enqueue) => {
      await db.lockRows(tx, 'volumes', moving.map((m) => m.v.id));
      for (const { v, r, baseline } of moving) {
        const o = { cluster, backendId, baselineId: baseline?.id ?? null, status: 'failed-over', requestId };
        if (await promoteCopy(deps, tx, enqueue, r, v, o)) moved.add(v.id);
      }
      const host = moving[0]?.r.secondary_host;
      if (host) await tx.updateTable('groups').set({ host, cluster_name: cluster }).where('id', '=', g.id).execute();
    });
    for (const m of moving) {
      if (m.baseline && !moved.has(m.v.id)) await driver.deleteSnapshot(m.baseline);
      if (moved.has(m.v.id)) await dropCheckpoint(driver, m.r);
    }
  });
}

/**
 * Failback of a group, on the cluster it was failed over to: once every
 * member's copy on the original backend is in step (else a retryable
 * error: the job is tried again), the members' writes are held at this
 * process's exports while a last group point ships there and every member
 * (and the group) moves back in one transaction; the connections here are
 * then dropped and reconnect to the original backend. The copies left here
 * count from the original backend's checkpoint of that last point, so that
 * they are resynchronised from what changed since, not made whole again.
 * @throws DriverError (retryable) while a copy is not in step yet.
 */
async function failBackGroup(deps: GroupReplicationDeps, driver: GuardedDriver, cluster: string, g: GroupRow, requestId: string | null, signal: AbortSignal): Promise<void> {
  const { db } = deps;
  const members = await deps.groups.members(db.kysely, g.id);
  let replicas: VolumeReplicaRow[] = [];
  let behind: string | undefined;
  await waitInRun(signal, async () => {
    replicas = [];
    behind = undefined;
    for (const v of members) {
      const r = await replicaOf(db.kysely, v.id);
      if (r && r.primary_cluster !== cluster) continue; // moved back by an earlier attempt
      if (!r || !copyReady(r) || (r.mode !== 'sync' && !['enabled', 'copying', 'lagging'].includes(r.state)) || await checkpointPending(db.kysely, deps.replicationKinds, r)) behind = v.id;
      else replicas.push(r);
    }
    return behind === undefined;
  }, () => `Failback of group ${g.id} waits for the copy of volume ${behind} on its original backend to be in step again.`);
  if (replicas.length === 0) return;
  if (!deps.replicator) throw new DriverError('This process ships no replication points: it cannot fail back.');
  const ids = replicas.map((r) => r.volume_id);
  await quiesceAll(deps, ids, async () => {
    // The last group point, taken and shipped while nothing writes; the rows move back before the writes go on.
    await deps.replicator!.shipGroupNow(g.id, driver, { quiesced: true });
    // The copies left here, made again once the group is back there, count from the original backend's checkpoint of that point.
    const baselines = await Promise.all(replicas.map((r) => checkpointOldPrimary(deps, r.volume_id, r.secondary_cluster)));
    await deps.queue.transaction(async (tx, enqueue) => {
      await db.lockRows(tx, 'volumes', ids);
      for (const [k, r] of replicas.entries()) await returnCopy(deps, tx, enqueue, r, { cluster, status: 'enabled', requestId, baselineId: baselines[k] });
      await tx.updateTable('groups').set({ host: replicas[0]!.secondary_host, cluster_name: replicas[0]!.secondary_cluster }).where('id', '=', g.id).execute();
    });
    // Still holding the writes: the connections here are dropped (their held writes with them) and reconnect to the original backend.
    for (const id of ids) {
      await deps.replicator!.endMirror(id);
      for (const a of await deps.attachments.ofVolume(db.kysely, id)) await deps.exports?.closeExport(a.export_name);
    }
  });
}
