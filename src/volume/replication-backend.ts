/**
 * Replication by the backend itself (issue 16 part 4): for a backend whose
 * driver declares `supportsBackendReplication` (RBD through Ceph's
 * rbd-mirror, `src/drivers/rbd/rbd-mirror.ts`), the copies live on the
 * target the backend's `replication_device` names, not on another Basalt
 * backend: there is no `volume_replicas` row and nothing ships through
 * Basalt. The core's part is this loop and the failover job's step:
 *
 * - {@link BackendReplicator}, every tick, for each such backend this
 *   process serves: makes the driver serve from the target its services row
 *   names (`active_backend_id`, set by a failover: a restart while failed
 *   over, or a failover another member ran), puts each replicated volume
 *   under the backend's replication once (`enableReplication`, with the
 *   type's `basalt:rbd_mirror_mode`, default `snapshot`), marks a point each
 *   half RPO (`basalt:replication_rpo_seconds`, a mirror snapshot) and shows
 *   the driver's state as the volume's `replication_status` (`copying`,
 *   `enabled`, `error`; a compare-and-swap, with a `volume.replication`
 *   event). A failed-over volume keeps `failed-over` and still gets points:
 *   they carry its writes back to the backend's own storage for failback.
 * - {@link failOverInDriver}, the `replication.failover` job's step on the
 *   backend's own cluster: the driver promotes the target's copies (failback:
 *   its own again) and serves from there; each replicated volume becomes
 *   `failed-over` (back: `enabled`), or `error` when its copy could not be
 *   promoted; on failover the volumes without a copy go to `error`
 *   (`not-capable`), as in Cinder. The volumes stay on their backend: their
 *   exports are dropped by the driver (lost volumes) and hosts reconnect.
 * - Replication groups (Cinder's 3.38 group actions, `group-replication-jobs.ts`)
 *   on such a backend: the members of a group whose replication is enabled
 *   get their points together, as one **group point** ({@link groupPointInDriver}),
 *   and a group fails over and back alone ({@link moveGroupInDriver}, the
 *   driver's `failOverVolumes`): its members are served from the target
 *   while the rest of the backend stays home. The loop tells the driver of
 *   every process of the backend which members are failed over so (a
 *   restart, a failover another member ran).
 *
 * How consistent a group point is: Ceph Pacific mirrors images one by one
 * (group mirroring came in Squid, and needs the image group API besides), so
 * a group point is each member's own mirror snapshot, taken one after the
 * other while Basalt's exports hold every member's writes (as a group
 * snapshot does). For hosts that write through Basalt's NBD exports the
 * members' snapshots are therefore of one instant. Two limits remain:
 * hosts attached with rbd connection info write through librbd directly,
 * past the exports, so their members' snapshots are only as close in time as
 * the snapshot calls (milliseconds, not one instant); and rbd-mirror ships
 * each member's snapshots by itself, so at a given moment the target may
 * hold one member at the latest group point and another at the one before.
 * An orderly failover (the primary answers) takes every member's demotion
 * with the writes held, so the promoted copies are one instant again; a
 * forced one (the primary lost) promotes each member's last shipped
 * snapshot, which may mix two consecutive group points. (Rolling the members
 * back to one point needs a snapshot per member per point that the copies
 * keep; user snapshots are that, and Ceph Pacific's librbd segfaults
 * promoting by force a copy whose interrupted sync had copied them: see the
 * README's RBD replication section.)
 */
import type { Logger } from 'pino';
import type { Clock } from '../common/index.ts';
import type { Db, ServiceRepository, Tx, VolumeRepository, VolumeTypeRepository, VolumeRow } from '../db/index.ts';
import type { FailoverResult, GuardedDriver, VolumeRef } from '../drivers/index.ts';
import { reporting, replicationTargetsOf } from '../services/index.ts';
import { quiesceAll } from './group-handlers.ts';
import { failUnreplicated, FAILBACK_ID, moveGroups, type FailoverPayload, type ReplicationDeps } from './replication-jobs.ts';
import type { ExportServer } from './volume-handlers.ts';
import { RBD_MIRROR_MODE_SPEC, replicationOf } from './volume-type-flags.ts';
/**
 * The longest `stop` waits for a tick, and a tick for a backend's pass: a
 * call on a lost cluster can hang in librbd past every timeout (a mirror
 * snapshot waits for the cluster to come back), and must hold neither the
 * other backends nor the process's shutdown. Such a backend's pass is
 * skipped until its stuck one ends.
 */
const PASS_WAIT_MS = 10_000;
/** Replication statuses the loop keeps up to date (a failed-over volume keeps its own). */
const SHOWN = ['copying', 'enabled', 'error'];
/** Group replication statuses whose members' points are group points. */
const GROUP_POINTS = ['enabled', 'failed-over'];

/** Settings of a {@link BackendReplicator}. */
export interface BackendReplicatorOptions {
  db: Db;
  volumes: VolumeRepository;
  types: VolumeTypeRepository;
  services: ServiceRepository;
  clock: Clock;
  /** The drivers of the backends this process serves, by cluster (only those that replicate themselves are looked at). */
  drivers: ReadonlyMap<string, GuardedDriver>;
  /** Milliseconds between ticks. Default 1000. */
  tickMs?: number;
  /** The process's export server, whose writes a group point holds (absent: nothing exported here to hold). */
  exports?: ExportServer;
  log: Logger;
}

/** Runs the loop; see the module comment. */
export class BackendReplicator {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  /** The target each backend's driver was told to serve from, by cluster. */
  private readonly serving = new Map<string, string>();
  /** Volumes put under replication in this process (and on which target). */
  private readonly enabled = new Map<string, string>();
  /** When each volume's last point was marked here (ms). */
  private readonly lastPointAt = new Map<string, number>();
  /** Backends whose pass is still running (see {@link PASS_WAIT_MS}). */
  private readonly busy = new Set<string>();
  /** Volumes of groups failed over alone whose driver here was told so, and the target it serves them from. */
  private readonly movedHere = new Map<string, string>();

  constructor(private readonly o: BackendReplicatorOptions) {}

  start(): void {
    const tick = (): void => {
      if (this.stopped) return;
      this.running = this.tick().catch((err) => this.o.log.warn({ err }, 'backend replication tick failed')).finally(() => {
        if (!this.stopped) this.timer = setTimeout(tick, this.o.tickMs ?? 1000);
      });
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await Promise.race([this.running, new Promise((r) => setTimeout(r, PASS_WAIT_MS).unref())]);
  }

  /** One pass (exposed for tests). */
  async tick(): Promise<void> {
    const passes: Promise<void>[] = [];
    for (const [cluster, driver] of this.o.drivers) {
      if (!driver.capabilities.supportsBackendReplication || this.busy.has(cluster)) continue;
      this.busy.add(cluster);
      passes.push(this.tickBackend(cluster, driver).catch((err) => this.o.log.warn({ err, cluster }, 'backend replication of a backend failed'))
        .finally(() => this.busy.delete(cluster)));
    }
    await Promise.race([Promise.all(passes), new Promise((r) => setTimeout(r, PASS_WAIT_MS).unref())]);
  }

  private async tickBackend(cluster: string, driver: GuardedDriver): Promise<void> {
    const { db } = this.o;
    const svc = await db.kysely.selectFrom('services').select(['replication_status', 'active_backend_id']).where('cluster', '=', cluster)
      .where('binary', '=', 'cinder-volume').executeTakeFirst();
    // A failover or failback under way is its job's: the driver changes sites there.
    if (!svc || svc.replication_status === 'failing-over') return;
    const want = svc.active_backend_id ?? FAILBACK_ID;
    if ((this.serving.get(cluster) ?? FAILBACK_ID) !== want) {
      await driver.failOver(want, []);
      this.serving.set(cluster, want);
      this.o.log.info({ cluster, active_backend_id: want }, 'serving from the active replication target');
    }
    const vols = await db.kysely.selectFrom('volumes').selectAll().where('cluster_name', '=', cluster).where('status', 'in', ['available', 'in-use'])
      .where('replication_status', 'in', [...SHOWN, 'failed-over']).execute() as VolumeRow[];
    const groupIds = [...new Set(vols.flatMap((v) => v.group_id ? [v.group_id] : []))];
    const groups = new Map(groupIds.length === 0 ? [] : (await db.kysely.selectFrom('groups').select(['id', 'replication_status']).where('id', 'in', groupIds).execute())
      .map((g) => [g.id, g.replication_status ?? 'disabled']));
    if (want === FAILBACK_ID) {
      // A failback not in step yet is tried again at the next tick; the points below go on meanwhile.
      await this.keepGroupsMoved(cluster, driver, vols, groups).catch((err) => this.o.log.warn({ err, cluster }, 'serving failed-over groups from their target failed'));
    }
    const now = this.o.clock.now();
    const groupPoints = new Map<string, VolumeRef[]>();
    for (const v of vols) {
      const type = v.volume_type_id ? await this.o.types.find(db.kysely, v.volume_type_id, { isAdmin: true, projectId: v.project_id }) : undefined;
      const settings = type ? replicationOf(type) : undefined;
      if (!type || !settings) continue;
      const ref = { id: v.id, sizeGiB: v.size };
      try {
        if (this.enabled.get(v.id) !== want) {
          await driver.enableReplication(ref, { mode: mirrorModeOf(type) });
          this.enabled.set(v.id, want);
        }
        if (now - (this.lastPointAt.get(v.id) ?? 0) >= settings.rpoSeconds * 1000 / 2) {
          // A member of a group whose replication is enabled: its point is the group's, taken below with the others'.
          const g = v.group_id && GROUP_POINTS.includes(groups.get(v.group_id) ?? '') ? v.group_id : undefined;
          if (g) groupPoints.set(g, [...(groupPoints.get(g) ?? []), ref]);
          else await driver.replicationPoint(ref);
          this.lastPointAt.set(v.id, now);
        }
        if (v.replication_status === 'failed-over') continue;
        const state = await driver.replicationState(ref);
        await this.show(v, state.status, state.detail);
      } catch (err) {
        this.o.log.warn({ err, volume_id: v.id }, 'backend replication of a volume failed');
        if (v.replication_status !== 'failed-over') await this.show(v, 'error', (err as Error).message);
      }
    }
    for (const [groupId, due] of groupPoints) {
      // Every member of the group, not only those due: one instant for all of them.
      const members = vols.filter((v) => v.group_id === groupId).map((v) => ({ id: v.id, sizeGiB: v.size }));
      await groupPointInDriver(driver, this.o.exports, members).then(
        () => { for (const m of members) this.lastPointAt.set(m.id, now); },
        (err) => { for (const m of due) this.lastPointAt.delete(m.id); this.o.log.warn({ err, group_id: groupId }, 'group point of a backend that replicates itself failed'); },
      );
    }
  }

  /**
   * Tells this process's driver which members of groups failed over alone it
   * serves from the target (and which came back): the group job told only
   * the driver of the process that ran it. `vols` are the backend's
   * replicated volumes, `groups` their groups' replication statuses. A
   * member's target is the backend's first: rbd-mirror mirrors to that one.
   */
  private async keepGroupsMoved(cluster: string, driver: GuardedDriver, vols: readonly VolumeRow[], groups: ReadonlyMap<string, string>): Promise<void> {
    const away = vols.filter((v) => v.replication_status === 'failed-over' && v.group_id && groups.get(v.group_id) === 'failed-over');
    const back = vols.filter((v) => this.movedHere.has(v.id) && !away.includes(v));
    const toMove = away.filter((v) => !this.movedHere.has(v.id));
    if (toMove.length === 0 && back.length === 0) return;
    const rows = (await this.o.services.list(this.o.db.kysely)).filter((x) => x.cluster === cluster && x.binary === 'cinder-volume');
    const target = reporting(rows).flatMap(({ report }) => replicationTargetsOf(report))[0];
    const refs = (list: readonly VolumeRow[]) => list.map((v) => ({ id: v.id, sizeGiB: v.size }));
    if (target && toMove.length > 0) {
      const { failed } = logUnpromoted(this.o.log, target, await driver.failOverVolumes(target, refs(toMove)));
      for (const v of toMove) if (!failed.includes(v.id)) this.movedHere.set(v.id, target);
    }
    if (back.length > 0) {
      const { failed } = logUnpromoted(this.o.log, FAILBACK_ID, await driver.failOverVolumes(FAILBACK_ID, refs(back)));
      for (const v of back) if (!failed.includes(v.id)) this.movedHere.delete(v.id);
    }
  }

  /** Sets a volume's replication status to `status` by compare-and-swap from what it was read as, with an event. */
  private async show(v: VolumeRow, status: string, detail: string): Promise<void> {
    if (v.replication_status === status) return;
    await this.o.db.kysely.transaction().execute(async (tx) => {
      const changed = await tx.updateTable('volumes').set({ replication_status: status }).where('id', '=', v.id)
        .where('replication_status', '=', v.replication_status!).executeTakeFirst();
      if (Number(changed.numUpdatedRows) === 0) return;
      await this.o.volumes.event(tx, v.project_id, v.id, 'volume.replication', v.replication_status, status, null, { replication_status: status });
    });
    this.o.log.info({ volume_id: v.id, from: v.replication_status, to: status, detail }, 'replication status');
  }
}

/**
 * The failover job's step for a backend that replicates itself; see the
 * module comment. Runs on the backend's own cluster; idempotent (a run after
 * a crash promotes what is left and sets the same statuses).
 * @throws DriverError from the driver (retryable while a failback waits for copies to be in step).
 */
export async function failOverInDriver(deps: ReplicationDeps, driver: GuardedDriver, p: FailoverPayload, requestId: string | null, log: Logger): Promise<void> {
  const { db } = deps;
  const back = p.backendId === FAILBACK_ID;
  const vols = await db.kysely.selectFrom('volumes').select(['id', 'project_id', 'size', 'replication_status']).where('cluster_name', '=', p.cluster)
    .where('replication_status', 'in', back ? ['failed-over', 'error'] : [...SHOWN, 'failed-over']).execute();
  const { failed } = logUnpromoted(log, p.backendId, await driver.failOver(p.backendId, vols.map((v) => ({ id: v.id, sizeGiB: v.size }))));
  await db.kysely.transaction().execute((tx) => recordMoves(deps, tx, vols, failed, p, requestId));
  // The backend's groups follow their members, as a file backend's do.
  await moveGroups(deps, p.cluster, p.cluster, back ? { 'failed-over': 'enabled' } : { enabled: 'failed-over' });
  if (!back) await failUnreplicated(deps, p.cluster, requestId);
}

/** Logs why the driver could not promote each volume `result` names (its replication status becomes `error`); returns `result`. */
function logUnpromoted(log: Logger, backendId: string, result: FailoverResult): FailoverResult {
  for (const id of result.failed) log.warn({ volume_id: id, backend_id: backendId, reason: result.reasons?.[id] ?? 'not given by the driver' }, 'the driver could not promote the volume\'s copy');
  return result;
}

/**
 * Sets each of `vols`, promoted on `p.backendId` by the driver, `failed-over`
 * (a failback: `enabled`), or `error` when named in `failed`, each with its
 * `volume.failover` (`volume.failback`) event, in `tx`.
 */
export async function recordMoves(
  deps: Pick<ReplicationDeps, 'volumes'>, tx: Tx, vols: ReadonlyArray<{ id: string; project_id: string }>, failed: readonly string[], p: FailoverPayload, requestId: string | null,
): Promise<void> {
  const back = p.backendId === FAILBACK_ID;
  for (const v of vols) {
    const status = failed.includes(v.id) ? 'error' : back ? 'enabled' : 'failed-over';
    await tx.updateTable('volumes').set({ replication_status: status }).where('id', '=', v.id).execute();
    await deps.volumes.event(tx, v.project_id, v.id, back ? 'volume.failback' : 'volume.failover', null, null, requestId, {
      backend_id: p.backendId, from_cluster: p.cluster, to_cluster: p.cluster, replication_status: status, in_driver: true,
    });
  }
}

/** The mirror mode a volume type asks of a backend that replicates itself (`basalt:rbd_mirror_mode`; default `snapshot`). */
export function mirrorModeOf(type: { extra_specs: Record<string, string> } | undefined): 'snapshot' | 'journal' {
  return type?.extra_specs[RBD_MIRROR_MODE_SPEC]?.trim() === 'journal' ? 'journal' : 'snapshot';
}

/**
 * One group point of `members` on a backend that replicates itself: each
 * member's point (a mirror snapshot) taken while this process's exports
 * hold the writes of them all (see the module comment for how consistent
 * that is on Ceph Pacific).
 * @throws DriverError from the driver.
 */
export async function groupPointInDriver(driver: GuardedDriver, exports: ExportServer | undefined, members: readonly VolumeRef[]): Promise<void> {
  await quiesceAll({ exports }, members.map((m) => m.id), async () => {
    await Promise.all(members.map((m) => driver.replicationPoint(m)));
  });
}

/**
 * A group's failover (to `backendId`) or failback (`default`) on a backend
 * that replicates itself: once the driver is ready (a failback's copies in
 * step, outside the hold), with the writes of every member held at this
 * process's exports, the driver promotes the members' copies on the other
 * side (`failOverVolumes`, the same steps as a whole backend's failover)
 * and their exports here are closed, the held writes with them: hosts
 * reconnect and are served from the side now primary. Returns the members
 * whose copy could not be promoted.
 * @throws DriverError (retryable while a failback waits for the members' copies to be in step).
 */
export async function moveGroupInDriver(
  deps: Pick<ReplicationDeps, 'exports' | 'attachments' | 'db'>, driver: GuardedDriver, members: readonly VolumeRef[], backendId: string, log: Logger,
): Promise<string[]> {
  const ids = members.map((m) => m.id);
  // A failback's wait for the copies to be in step (up to a minute on
  // rbd-mirror) comes before the hold: hosts' writes are held only while
  // the sides change.
  await driver.failOverVolumes(backendId, members, { prepare: true });
  return quiesceAll(deps, ids, async () => {
    const { failed } = logUnpromoted(log, backendId, await driver.failOverVolumes(backendId, members));
    for (const id of ids) {
      if (failed.includes(id)) continue;
      for (const a of await deps.attachments.ofVolume(deps.db.kysely, id)) await deps.exports?.closeExport(a.export_name);
    }
    return failed;
  });
}
