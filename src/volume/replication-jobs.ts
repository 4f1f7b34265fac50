/**
 * The job kinds of replication (issue 16) and the secondary's side of it:
 * making the secondary copy and its export, removing it, and failing a
 * backend over to its target or back (`os-services/failover_host`, 3.26
 * `failover`).
 *
 * | kind | target | does |
 * | --- | --- | --- |
 * | `replication.prepare` v1 | `volume:<secondary cluster>` | makes (or grows) the secondary copy, its read-write export (`volume_exports`, purpose `replication`, TLS-PSK) and, after a failover, notes the blocks the old primary wrote past its last shipped point so the next shipment overwrites them |
 * | `replication.remove` v1 | `volume:<secondary cluster>` | removes a deleted volume's secondary copy and its export |
 * | `replication.failover` v1 | `volume:<the cluster that becomes primary>` | failover: promotes the secondary copies of the failed backend's replicated volumes (rows, attachments, exports fenced); failback (`default`): ships a last point with the volume's writes held, then moves back |
 *
 * A failover job is the backend's, not a volume's: its failure puts the
 * failed backend's services in `failover-error` (Cinder's), and every step is
 * a compare-and-swap a new attempt finds done, so a SIGKILL midway leaves
 * either the old primary or the new one named by each volume, never neither.
 */
import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { isoAt } from '../common/index.ts';
import type { AttachmentRepository, Db, ServiceRepository, Tx, VolumeReplicaRow } from '../db/index.ts';
import type { GuardedDriver } from '../drivers/index.ts';
import { DriverError } from '../errors/index.ts';
import type { Enqueue, JobHandler, JobKind } from '../jobs/index.ts';
import { failureDetail, MESSAGE_ACTIONS, MESSAGE_DETAILS, recordUserMessage } from '../messages/index.ts';
import { volumeTarget } from '../services/index.ts';
import { withLock } from '../coordination/index.ts';
import { fenceExport } from './export-fence.ts';
import { moveStaleExports } from './service-cleanup.ts';
import { payloadParser } from './operations/index.ts';
import type { VolumeHandlerDeps } from './volume-handlers.ts';
import { groupReplicationJobKinds, type GroupReplicationJobKinds, type GroupReplicationMessages } from './group-replication-jobs.ts';
import { failOverInDriver } from './replication-backend.ts';

/** `replication.prepare` and `replication.remove`: the volume whose secondary copy is made or removed, on `cluster`. */
export interface ReplicaPayload { volumeId: string; cluster: string }

/** `replication.checkpoint`: snapshot the copy of `volumeId` on `cluster` as of the group point `pointId`. */
export interface CheckpointPayload { volumeId: string; cluster: string; pointId: string }

/**
 * `replication.failover`: fail the backend `cluster` over to its target
 * `backendId` (served by the job's cluster), or back to itself when
 * `backendId` is `default`.
 */
export interface FailoverPayload { cluster: string; backendId: string }

/** The replication job kinds, a group's (`group-replication-jobs.ts`) included. */
export interface ReplicationJobKinds extends GroupReplicationJobKinds {
  replicaPrepare: JobKind<ReplicaPayload>;
  replicaRemove: JobKind<ReplicaPayload>;
  /** A replicated group's member: the copy's checkpoint after a group point (`Replicator.shipGroupNow`). */
  replicaCheckpoint: JobKind<CheckpointPayload>;
  failover: JobKind<FailoverPayload>;
}

/** Cinder's word for failing back to the backend's own storage. */
export const FAILBACK_ID = 'default';

/**
 * Builds the kinds. A failed failover marks the backend's services
 * `failover-error`, as Cinder does; a failed group job records its user
 * messages through `messages`.
 */
export function replicationJobKinds(messages?: GroupReplicationMessages): ReplicationJobKinds {
  const replica = payloadParser<ReplicaPayload>({ volumeId: 'string', cluster: 'string' });
  return {
    ...groupReplicationJobKinds(messages),
    // The primary's loop queues it again while the copy is missing: a failure only waits for the next.
    replicaPrepare: { kind: 'replication.prepare', version: 1, minVersion: 1, resourceType: 'volume', parse: replica, async onFailure() { /* retried by the loop */ } },
    // Space only: the volume is gone.
    replicaRemove: { kind: 'replication.remove', version: 1, minVersion: 1, resourceType: 'volume', parse: replica, async onFailure() { /* space only */ } },
    // Without it the group's next point ships anyway, with no checkpoint to fall back on (the copy as before this feature).
    replicaCheckpoint: {
      kind: 'replication.checkpoint', version: 1, minVersion: 1, resourceType: 'volume',
      parse: payloadParser<CheckpointPayload>({ volumeId: 'string', cluster: 'string', pointId: 'string' }), async onFailure() { /* the next point goes on without it */ },
    },
    failover: {
      kind: 'replication.failover', version: 1, minVersion: 1, resourceType: 'service',
      parse: payloadParser<FailoverPayload>({ cluster: 'string', backendId: 'string' }),
      async onFailure(tx, p) {
        await tx.updateTable('services').set({ replication_status: 'failover-error' })
          .where('cluster', '=', p.cluster).where('replication_status', '=', 'failing-over').execute();
      },
    },
  };
}

/** What the replication handlers need beyond a volume service's. */
export interface ReplicationDeps extends VolumeHandlerDeps {
  replicationKinds: ReplicationJobKinds;
  messageTtlSeconds: number;
  attachments: AttachmentRepository;
  /** This process's shipping loop (absent: it ships nothing, and cannot fail back). */
  replicator?: {
    shipNow(volumeId: string, driver: GuardedDriver, o: { quiesced: boolean }): Promise<boolean>;
    /** Ships one point of a group's members, all of one instant (`Replicator.shipGroupNow`). */
    shipGroupNow(groupId: string, driver: GuardedDriver, o: { quiesced: boolean }): Promise<boolean>;
    /** Ends a synchronous replica's mirror in this process (its connections reconnect to what the row names). */
    endMirror(volumeId: string): Promise<void>;
  };
}

/**
 * The id of the replication snapshot (a point, a failover's baseline) that
 * follows `after` for volume `volumeId`: derived, not random, so a run after a
 * crash finds what the killed one left under the same id and removes it
 * before taking it again (a leftover may be of an earlier instant).
 */
export function nextPointId(volumeId: string, after: string | null, purpose: 'point' | 'baseline' | 'checkpoint'): string {
  const h = createHash('sha256').update(`${purpose}:${volumeId}:${after ?? 'none'}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** The snapshot on the secondary's backend of a copy as of point `pointId` (its checkpoint). */
export function checkpointRef(volumeId: string, pointId: string, sizeGiB: number): { id: string; volumeId: string; sizeGiB: number } {
  return { id: nextPointId(volumeId, pointId, 'checkpoint'), volumeId, sizeGiB };
}

/**
 * Whether the copy's checkpoint of its last point is still to be taken (its
 * `replication.checkpoint` queued or running): a group point must not write
 * the copy before it is.
 */
export async function checkpointPending(q: Tx | Db['kysely'], kinds: ReplicationJobKinds, r: VolumeReplicaRow): Promise<boolean> {
  if (!r.last_point_id || r.checkpoint_point_id === r.last_point_id) return false;
  return !!(await q.selectFrom('jobs').select('id').where('kind', '=', kinds.replicaCheckpoint.kind)
    .where('resource_id', '=', r.volume_id).where('state', 'in', ['queued', 'running']).executeTakeFirst());
}

/** The replica row of a volume, if it is replicated. */
export async function replicaOf(q: Tx | Db['kysely'], volumeId: string): Promise<VolumeReplicaRow | undefined> {
  return q.selectFrom('volume_replicas').selectAll().where('volume_id', '=', volumeId).executeTakeFirst();
}

/** Makes the read-write export the primary ships a volume's points through, on the secondary `cluster`; returns its name. */
async function replicaExport(tx: Tx, volumeId: string, cluster: string, nowMs: number): Promise<string> {
  const name = `basalt-replica-${randomBytes(24).toString('hex')}`;
  await tx.insertInto('volume_exports').values({
    export_name: name, volume_id: volumeId, purpose: 'replication', read_only: 0, cluster,
    psk_identity: `basalt-replica-${volumeId}-${randomBytes(4).toString('hex')}`, psk_key: randomBytes(32).toString('hex'), created_at: isoAt(nowMs),
  }).execute();
  return name;
}

/** Removes the replication exports of a volume's copy on `cluster`. */
export async function dropReplicaExports(tx: Tx, volumeId: string, cluster: string): Promise<void> {
  await tx.deleteFrom('volume_exports').where('volume_id', '=', volumeId).where('purpose', '=', 'replication').where('cluster', '=', cluster).execute();
}

/** Builds the handlers a volume service of `cluster` runs for replication. */
export function replicationHandlers(deps: ReplicationDeps, driver: GuardedDriver, cluster: string): JobHandler<any>[] { // eslint-disable-line @typescript-eslint/no-explicit-any
  const { db, replicationKinds: kinds } = deps;
  const locked = <T>(name: string, fn: () => Promise<T>): Promise<T> => withLock(deps.coordinator, name, deps.lockTimeoutMs, fn);

  const prepare: JobHandler<ReplicaPayload> = {
    kind: kinds.replicaPrepare,
    async run(ctx, p) {
      const r = await replicaOf(db.kysely, p.volumeId);
      const v = await deps.volumes.get(db.kysely, p.volumeId);
      // Settled meanwhile: removed, failed over elsewhere, or prepared by an earlier attempt.
      if (!r || !v || r.secondary_cluster !== p.cluster || r.state !== 'creating') return ctx.complete();
      const vol = { id: v.id, sizeGiB: v.size };
      let pending: string | null = r.pending_ranges;
      await locked(`replica-${v.id}`, async () => {
        // Idempotent: an existing copy is kept (and grown to the volume's size).
        await driver.createVolume(vol);
        if (r.peer_point_id) {
          // This copy was the primary until a failover: what it took after its last shipped point
          // is not on the new primary, and the next shipment must overwrite it.
          const peer = { id: r.peer_point_id, volumeId: v.id, sizeGiB: v.size };
          const diverged = driver.capabilities.supportsChangedExtents
            ? await driver.changedExtents(vol, peer).catch(() => undefined)
            : undefined;
          const all = [{ offset: 0, length: v.size * 1024 ** 3 }];
          pending = JSON.stringify([...JSON.parse(pending ?? '[]') as unknown[], ...(diverged ?? all).map((e) => [e.offset, e.length])]);
        }
      });
      await ctx.complete(async (tx) => {
        await dropReplicaExports(tx, v.id, p.cluster);
        const name = await replicaExport(tx, v.id, p.cluster, deps.clock.now());
        await tx.updateTable('volume_replicas').set({ state: 'copying', export_name: name, pending_ranges: pending, peer_point_id: null, updated_at: isoAt(deps.clock.now()) })
          .where('volume_id', '=', v.id).where('state', '=', 'creating').where('secondary_cluster', '=', p.cluster).execute();
      });
      // The old primary's point is only space now (destroy last: after the commit).
      if (r.peer_point_id) await driver.deleteSnapshot({ id: r.peer_point_id });
    },
  };

  const remove: JobHandler<ReplicaPayload> = {
    kind: kinds.replicaRemove,
    async run(ctx, p) {
      const r = await replicaOf(db.kysely, p.volumeId);
      await ctx.complete(async (tx) => {
        await dropReplicaExports(tx, p.volumeId, p.cluster);
        await tx.deleteFrom('volume_replicas').where('volume_id', '=', p.volumeId).where('secondary_cluster', '=', p.cluster).execute();
      });
      // The exports are gone: close what is still connected, then remove the copy (destroy last).
      await locked(`replica-${p.volumeId}`, async () => {
        if (r?.checkpoint_point_id && r.secondary_cluster === p.cluster) await driver.deleteSnapshot({ id: nextPointId(p.volumeId, r.checkpoint_point_id, 'checkpoint') });
        await driver.deleteVolume({ id: p.volumeId });
      });
    },
  };

  const checkpoint: JobHandler<CheckpointPayload> = {
    kind: kinds.replicaCheckpoint,
    async run(ctx, p) {
      const r = await replicaOf(db.kysely, p.volumeId);
      const v = await deps.volumes.get(db.kysely, p.volumeId);
      // Settled meanwhile: removed, failed over, or a later point recorded (its own checkpoint follows).
      if (!r || !v || r.secondary_cluster !== p.cluster || r.last_point_id !== p.pointId || r.checkpoint_point_id === p.pointId) return ctx.complete();
      const snap = checkpointRef(v.id, p.pointId, v.size);
      // The group's next point waits for this one: nothing writes the copy meanwhile.
      await locked(`replica-${v.id}`, async () => {
        await driver.deleteSnapshot(snap); // what a killed run left
        await driver.createSnapshot(snap);
      });
      await ctx.complete(async (tx) => {
        await tx.updateTable('volume_replicas').set({ checkpoint_point_id: p.pointId })
          .where('volume_id', '=', v.id).where('secondary_cluster', '=', p.cluster).where('last_point_id', '=', p.pointId).execute();
      });
      if (r.checkpoint_point_id) await driver.deleteSnapshot({ id: nextPointId(v.id, r.checkpoint_point_id, 'checkpoint') });
    },
  };

  const failover: JobHandler<FailoverPayload> = {
    kind: kinds.failover,
    async run(ctx, p) {
      // A backend that replicates itself (RBD's rbd-mirror) promotes the target's copies through its driver (`replication-backend.ts`).
      if (driver.capabilities.supportsBackendReplication) await failOverInDriver(deps, driver, p, ctx.job.request_id, ctx.log);
      else if (p.backendId === FAILBACK_ID) await failBack(deps, driver, cluster, p, ctx.job.request_id);
      else await failOver(deps, driver, cluster, p, ctx.job.request_id);
      await ctx.complete(async (tx) => {
        const back = p.backendId === FAILBACK_ID;
        const frozen = (await tx.selectFrom('services').select('frozen').where('cluster', '=', p.cluster).executeTakeFirst())?.frozen === 1;
        await tx.updateTable('services').set(back
          ? { replication_status: null, active_backend_id: null, disabled: frozen ? 1 : 0, disabled_reason: frozen ? 'frozen' : null }
          : { replication_status: 'failed-over', active_backend_id: p.backendId, disabled: 1, disabled_reason: 'failed-over' })
          .where('cluster', '=', p.cluster).where('replication_status', '=', 'failing-over').execute();
      });
      // Hosts attached to a moved volume get connection info naming a live exporter of its new backend, or its new site (rbd).
      await moveStaleExports({ db, queue: deps.queue, services: deps.services, volumes: deps.volumes, attachments: deps.attachments, serviceDownMs: deps.queue.options.serviceDownMs ?? 60_000 });
    },
  };
  return [prepare, remove, checkpoint, failover];
}

/**
 * Failover, on the target's cluster: each replicated volume of the failed
 * backend that has a secondary copy here becomes this cluster's (its row, a
 * point of it that the next shipment counts from), its old exports are
 * fenced, and its replica now ships from here to the old primary once that
 * is back. Volumes of the backend that are not replicated here go to `error`
 * (`not-capable`), as in Cinder. Each volume moves in one transaction.
 */
async function failOver(deps: ReplicationDeps, driver: GuardedDriver, cluster: string, p: FailoverPayload, requestId: string | null): Promise<void> {
  const { db } = deps;
  const replicas = await db.kysely.selectFrom('volume_replicas').selectAll().where('primary_cluster', '=', p.cluster).where('secondary_cluster', '=', cluster).execute();
  for (const r of replicas) {
    const v = await deps.volumes.get(db.kysely, r.volume_id);
    if (!v) continue;
    // A synchronous copy has every acknowledged write once its mirror was in step (last_point_at), for no
    // write is acknowledged without it after; an asynchronous one is the volume as of its last point.
    const sync = r.mode === 'sync';
    if (sync ? !r.last_point_at : !r.last_point_id) {
      // Never in step: the copy here is not the volume; it stays on the failed backend.
      await db.kysely.updateTable('volumes').set({ replication_status: 'error' }).where('id', '=', v.id).execute();
      continue;
    }
    // A synchronous mirror in this process (both backends here) stops writing to the old primary.
    await deps.replicator?.endMirror(v.id);
    const baseline = await takeBaseline(driver, r, v);
    let moved = false;
    await deps.queue.transaction(async (tx, enqueue) => {
      moved = await promoteCopy(deps, tx, enqueue, r, v, { cluster, backendId: p.backendId, baselineId: baseline?.id ?? null, status: 'failed-over', requestId });
    });
    if (!moved && baseline) await driver.deleteSnapshot(baseline);
    if (moved) await dropCheckpoint(driver, r);
  }
  // Groups whose members all moved move with them (Cinder applies the driver's group updates too).
  await moveGroups(deps, p.cluster, cluster, { enabled: 'failed-over' });
  await failUnreplicated(deps, p.cluster, requestId);
}

/** What a failed backend `cluster` holds without a copy cannot be served: each such volume goes to `error` (`not-capable`), as in Cinder. */
export async function failUnreplicated(deps: ReplicationDeps, cluster: string, requestId: string | null): Promise<void> {
  const { db } = deps;
  await db.kysely.transaction().execute(async (tx) => {
    const left = await tx.selectFrom('volumes').select(['id', 'project_id', 'status']).where('cluster_name', '=', cluster)
      .where((eb) => eb.or([eb('replication_status', 'is', null), eb('replication_status', 'in', ['disabled', 'not-capable'])])).execute();
    for (const v of left) {
      await tx.updateTable('volumes').set({ status: 'error', replication_status: 'not-capable' }).where('id', '=', v.id).execute();
      if (v.status !== 'error') {
        await deps.volumes.event(tx, v.project_id, v.id, 'volume.status', v.status, 'error', requestId,
          failureDetail('volume', MESSAGE_ACTIONS.FAILOVER_VOLUME, MESSAGE_DETAILS.NOT_REPLICATED));
      }
      await tx.updateTable('snapshots').set({ status: 'error' }).where('volume_id', '=', v.id).execute();
      await recordUserMessage(tx, deps.clock, deps.messageTtlSeconds, {
        projectId: v.project_id, resourceType: 'volume', resourceId: v.id, action: MESSAGE_ACTIONS.FAILOVER_VOLUME, detail: MESSAGE_DETAILS.NOT_REPLICATED, requestId,
      });
    }
  });
}

/**
 * Fences the exports of a volume's attachments on the members of `oldCluster`
 * that are up (durable jobs; each drops the connections on its member) and
 * notifies every process at once. A member that is down serves nothing when
 * it starts again (the volume is no longer its backend's), and one cut off
 * from a PostgreSQL database fences itself.
 */
export async function fenceOld(deps: ReplicationDeps, tx: Tx, enqueue: Enqueue, volumeId: string, oldCluster: string, requestId: string | null): Promise<void> {
  const live = (await deps.services.list(tx)).some((s) => s.cluster === oldCluster && deps.services.isUp(s, deps.queue.options.serviceDownMs ?? 60_000));
  for (const a of await deps.attachments.ofVolume(tx, volumeId)) {
    await fenceExport({ db: deps.db, queue: deps.queue, services: deps.services as ServiceRepository, kinds: deps.kinds }, tx, live ? enqueue : undefined, { id: volumeId, cluster_name: oldCluster }, a.export_name, requestId);
  }
}

/**
 * Failback, on the cluster the volumes were failed over to: for each volume
 * whose copy on the original backend is in step, its attachments' writes are
 * held at this process's export while a last point ships there and the row
 * moves back; the connections are then dropped and reconnect to the original
 * backend. The API refused the request unless the original backend is up.
 * @throws DriverError (retryable) while a copy is not in step yet: the job is tried again.
 */
async function failBack(deps: ReplicationDeps, driver: GuardedDriver, cluster: string, p: FailoverPayload, requestId: string | null): Promise<void> {
  const { db } = deps;
  const replicas = await db.kysely.selectFrom('volume_replicas').selectAll().where('primary_cluster', '=', cluster).where('secondary_cluster', '=', p.cluster).execute();
  // A synchronous copy is in step only once its mirror is (enabled); an asynchronous one (lagging too) ships its last point below.
  const behind = replicas.filter((r) => !r.export_name || !(r.mode === 'sync' ? ['enabled'] : ['enabled', 'copying', 'lagging']).includes(r.state));
  if (behind.length > 0) {
    throw new DriverError(`Failback of ${p.cluster} waits for ${behind.length} volume(s) to be in step again (${behind.map((r) => r.volume_id).join(', ')}).`, { retryable: true });
  }
  if (!deps.replicator) throw new DriverError('This process ships no replication points: it cannot fail back.');
  for (const r of replicas) {
    const hold = async (): Promise<void> => {
      // The last point, taken and shipped while nothing writes; the row moves back before the writes go on.
      // A synchronous copy in step has every write already (the mirror acknowledged none without it).
      if (r.mode !== 'sync') await deps.replicator!.shipNow(r.volume_id, driver, { quiesced: true });
      // The copy here, made again once the volume is back there, counts from the old primary's snapshot of it now.
      const baselineId = await checkpointOldPrimary(deps, r.volume_id, p.cluster);
      await deps.queue.transaction((tx, enqueue) => returnCopy(deps, tx, enqueue, r, { cluster, status: 'enabled', requestId, baselineId }));
      // Still holding the writes: the connections here are dropped (their held writes with them) and reconnect to the original backend.
      await deps.replicator!.endMirror(r.volume_id);
      for (const a of await deps.attachments.ofVolume(db.kysely, r.volume_id)) await deps.exports?.closeExport(a.export_name);
    };
    if (deps.exports) await deps.exports.quiesce(r.volume_id, hold);
    else await hold();
  }
  await moveGroups(deps, cluster, p.cluster, { 'failed-over': 'enabled' });
}

/** How long a failback, with the volume's writes held, waits for the old primary's checkpoint of its copy. */
const CHECKPOINT_WAIT_MS = 10_000;
/** How often it looks. */
const CHECKPOINT_POLL_MS = 50;

/**
 * During a failback, with the volume's writes held and its copy on the old
 * primary `cluster` alike (the last point shipped, or the mirror in step):
 * has that copy snapshotted as it is now by the old primary's process (a
 * `replication.checkpoint` of the replica's last point) and returns the
 * snapshot's id, for the replica the other way round to count from
 * ({@link returnCopy}) — so the copy left here is resynchronised from what
 * changed, not made whole again. Undefined when there is no last point or
 * the checkpoint was not taken within {@link CHECKPOINT_WAIT_MS} (then it is
 * made whole, as before).
 */
export async function checkpointOldPrimary(deps: ReplicationDeps, volumeId: string, cluster: string): Promise<string | undefined> {
  const r = await replicaOf(deps.db.kysely, volumeId);
  if (!r?.last_point_id || r.secondary_cluster !== cluster) return undefined;
  const pointId = r.last_point_id;
  if (r.checkpoint_point_id !== pointId) {
    await deps.queue.transaction(async (tx, enqueue) => {
      await enqueue(deps.replicationKinds.replicaCheckpoint, { target: volumeTarget(cluster), resourceId: volumeId, payload: { volumeId, cluster, pointId } });
    });
    for (const end = Date.now() + CHECKPOINT_WAIT_MS; (await replicaOf(deps.db.kysely, volumeId))?.checkpoint_point_id !== pointId;) {
      if (Date.now() >= end) return undefined;
      await sleep(CHECKPOINT_POLL_MS);
    }
  }
  return checkpointRef(volumeId, pointId, 0).id;
}

/**
 * Readies a copy to be promoted and returns its baseline: a snapshot of the
 * copy as shipped, which the next shipment back counts from. A synchronous
 * copy has one only when its primary had an anchor (`Replicator.anchor`),
 * the peer its old primary's divergence counts from; without, its old
 * primary gets a whole copy back, holes zeroed. A copy a
 * group point was cut off in the middle of (`shipping_point_id` still set)
 * may hold part of that point: it goes back to its checkpoint first, so the
 * group's copies are all of their last recorded point. What a killed run
 * left under the baseline's id goes first.
 */
export async function takeBaseline(driver: GuardedDriver, r: VolumeReplicaRow, v: { id: string; size: number }): Promise<{ id: string; volumeId: string; sizeGiB: number } | undefined> {
  if (r.mode === 'sync' && !r.last_point_id) return undefined;
  if (r.shipping_point_id && r.last_point_id && r.checkpoint_point_id === r.last_point_id && driver.capabilities.supportsRevertToSnapshot) {
    await driver.revertToSnapshot({ id: v.id, sizeGiB: v.size }, checkpointRef(v.id, r.last_point_id, v.size));
  }
  const baseline = { id: nextPointId(v.id, r.last_point_id, 'baseline'), volumeId: v.id, sizeGiB: v.size };
  await driver.deleteSnapshot(baseline);
  await driver.createSnapshot(baseline);
  return baseline;
}

/** Removes a promoted copy's checkpoint (only space once the copy is the volume). */
export async function dropCheckpoint(driver: GuardedDriver, r: VolumeReplicaRow): Promise<void> {
  if (r.checkpoint_point_id) await driver.deleteSnapshot({ id: nextPointId(r.volume_id, r.checkpoint_point_id, 'checkpoint') });
}

/**
 * Makes a volume its copy's on `o.cluster`, in `tx` (a failover's step, of a
 * backend or a group): its row (and, given `o.status`, its replication
 * status), a `volume.failover` event, its replica the other way round (it
 * ships to the old primary once that is back, counting from the baseline),
 * and its old exports fenced. Returns false when the replica no longer names
 * `r`'s primary (an earlier attempt moved it).
 */
export async function promoteCopy(
  deps: ReplicationDeps, tx: Tx, enqueue: Enqueue, r: VolumeReplicaRow, v: { id: string; project_id: string },
  o: { cluster: string; backendId: string; baselineId: string | null; status: string | null; requestId: string | null },
): Promise<boolean> {
  await deps.db.lockRows(tx, 'volumes', [v.id]);
  const now = await replicaOf(tx, v.id);
  if (!now || now.primary_cluster !== r.primary_cluster) return false;
  const at = isoAt(deps.clock.now());
  await tx.updateTable('volumes').set({ host: r.secondary_host, cluster_name: o.cluster, updated_at: at, ...(o.status ? { replication_status: o.status } : {}) }).where('id', '=', v.id).execute();
  await deps.volumes.event(tx, v.project_id, v.id, 'volume.failover', null, null, o.requestId, {
    backend_id: o.backendId, from_cluster: r.primary_cluster, to_cluster: o.cluster, from_host: r.primary_host, to_host: r.secondary_host, mode: r.mode,
    replication_status: o.status ?? 'failing-over', last_point_at: r.last_point_at,
  });
  await tx.updateTable('volume_replicas').set({
    primary_cluster: o.cluster, primary_host: r.secondary_host, secondary_cluster: r.primary_cluster, secondary_host: r.primary_host,
    state: 'creating', export_name: null, last_point_id: o.baselineId, last_point_at: at,
    peer_point_id: r.last_point_id, pending_ranges: null, last_error: null, checkpoint_point_id: null, shipping_point_id: null, updated_at: at,
  }).where('volume_id', '=', v.id).execute();
  await dropReplicaExports(tx, v.id, o.cluster);
  await fenceOld(deps, tx, enqueue, v.id, r.primary_cluster, o.requestId);
  return true;
}

/**
 * Moves a failed-over volume back to its copy's backend, in `tx` (a
 * failback's step, of a backend or a group, once its last point shipped):
 * its row (and, given `o.status`, its replication status), a
 * `volume.failback` event, its replica the other way round (the copy left on
 * `o.cluster` is made again, overwriting what it diverged in: counting from
 * `o.baselineId`, the original backend's snapshot of its copy as the volume
 * was when it moved, or whole without one), and its exports on `o.cluster`
 * fenced. Does nothing when the replica no longer names `o.cluster` as the
 * primary.
 */
export async function returnCopy(
  deps: ReplicationDeps, tx: Tx, enqueue: Enqueue, r: VolumeReplicaRow, o: { cluster: string; status: string | null; requestId: string | null; baselineId?: string | undefined },
): Promise<void> {
  await deps.db.lockRows(tx, 'volumes', [r.volume_id]);
  const now = await replicaOf(tx, r.volume_id);
  if (!now || now.primary_cluster !== o.cluster) return;
  const at = isoAt(deps.clock.now());
  const moved = await tx.updateTable('volumes').set({ host: r.secondary_host, cluster_name: r.secondary_cluster, updated_at: at, ...(o.status ? { replication_status: o.status } : {}) })
    .where('id', '=', r.volume_id).returning('project_id').executeTakeFirst();
  if (moved) {
    await deps.volumes.event(tx, moved.project_id, r.volume_id, 'volume.failback', null, null, o.requestId, {
      backend_id: FAILBACK_ID, from_cluster: o.cluster, to_cluster: r.secondary_cluster, from_host: r.primary_host, to_host: r.secondary_host, mode: r.mode,
      replication_status: o.status ?? 'failing-over',
    });
  }
  await tx.updateTable('volume_replicas').set({
    primary_cluster: r.secondary_cluster, primary_host: r.secondary_host, secondary_cluster: o.cluster, secondary_host: r.primary_host,
    state: 'creating', export_name: null, peer_point_id: now.last_point_id, last_point_id: o.baselineId ?? null, pending_ranges: null,
    checkpoint_point_id: null, shipping_point_id: null, updated_at: at,
  }).where('volume_id', '=', r.volume_id).execute();
  await dropReplicaExports(tx, r.volume_id, r.secondary_cluster);
  await fenceOld(deps, tx, enqueue, r.volume_id, o.cluster, o.requestId);
}

/**
 * After a backend's failover or failback: each group on `from` whose members
 * are now all on `to` moves there too (its host, so its later jobs go where
 * its volumes are), and its replication status changes as `status` maps it
 * (`enabled` → `failed-over` on failover, back on failback). A backend that
 * replicates itself keeps its volumes (`from` is `to`): only the statuses
 * change, a group failed over alone before included (the backend's failback
 * brought its members home too).
 */
export async function moveGroups(deps: ReplicationDeps, from: string, to: string, status: Record<string, string>): Promise<void> {
  await deps.queue.transaction(async (tx) => {
    for (const g of await tx.selectFrom('groups').select(['id', 'replication_status']).where('cluster_name', '=', from).execute()) {
      const members = await tx.selectFrom('volumes').select(['host', 'cluster_name']).where('group_id', '=', g.id).execute();
      if (members.length === 0 || members.some((m) => m.cluster_name !== to)) continue;
      const next = status[g.replication_status ?? 'disabled'];
      await tx.updateTable('groups').set({ host: members[0]!.host, cluster_name: to, ...(next ? { replication_status: next } : {}) }).where('id', '=', g.id).execute();
    }
  });
}

/**
 * Queues `kind` (prepare or remove) for a volume's copy on `cluster` unless
 * one is queued or running already: the replicator asks at every tick.
 */
export async function queueReplicaJob(tx: Tx, enqueue: Enqueue, kind: JobKind<ReplicaPayload>, volumeId: string, cluster: string): Promise<void> {
  const open = await tx.selectFrom('jobs').select('id').where('kind', '=', kind.kind).where('resource_id', '=', volumeId)
    .where('state', 'in', ['queued', 'running']).executeTakeFirst();
  if (!open) await enqueue(kind, { target: volumeTarget(cluster), resourceId: volumeId, payload: { volumeId, cluster } });
}
