/**
 * The replicator: the loop of a process serving primary backends that keeps
 * each replicated volume's secondary copy in step (issue 16, asynchronous
 * mode).
 *
 * Every tick, for the volumes of the backends this process serves:
 * - a replicated volume (`replication_status` not `disabled`) with no replica
 *   row gets one, naming a live backend whose `volume_backend_name` is the
 *   primary's first `replication_device` target, and a `replication.prepare`
 *   job there makes the copy and its export;
 * - a replica whose copy is ready and whose last point is older than half its
 *   RPO ships a new **point**: a snapshot taken with the volume's writes held
 *   at the export (crash-consistent), read through a temporary volume made
 *   from it, and written to the secondary copy through the secondary's NBD
 *   export with TLS-PSK (`nbd-client.ts`). The first point reads only the
 *   allocated extents (block status) and punches the holes; later ones only
 *   the extents the driver says changed since the previous point
 *   (`changedExtents`), plus the ranges the secondary diverged in
 *   (`pending_ranges`, after a failover). The new point replaces the
 *   previous one only once the secondary has flushed it;
 * - a replica whose volume is gone is removed on the secondary.
 *
 * Synchronous replicas (`basalt:replication_mode = sync`) ship no points:
 * once the copy and its export are ready, the volume is served through a
 * mirror (`live-move.ts`, the attached moves' mirror) whose destination is
 * the secondary copy over its export, and the mirror's first copy reads only
 * the allocated extents. A write is acknowledged once both copies have it;
 * while the mirror is not ready the export refuses the volume
 * (`attachment-exports.ts`), so no write is acknowledged on the primary
 * alone. A write the secondary refuses fails with its errno (ENOSPC for a
 * full secondary, EIO for a lost one) and breaks the mirror: it is rebuilt
 * (reconnected and copied again) at the next tick.
 *
 * A shipment that fails (target down, full, failing) leaves the previous
 * point in place, marks the replica `error` and the volume's
 * `replication_status` `error` with a user message, and is tried again at the
 * next tick: the secondary catches up by itself, and the primary's own I/O is
 * never touched. A copy that is merely slow — its last point older than its
 * RPO plus one tick, with nothing failing (a shipment slower than the
 * volume's changes, or one waiting for the volume's lock) — is **lagging**:
 * the replica says so, and the volume's `replication_status` is `error` with
 * a user message and a `volume.replication_degraded` event, until a point
 * ships in time again (`volume.replication_restored`). Each volume ships
 * under its `volume-<id>` lock, so one process at a time ships it and no
 * operation changes it meanwhile.
 *
 * Shipments (points, group points, mirrors' first copies) run on a bounded
 * queue (fastq), at most `maxConcurrentShipments` at once and one at a time
 * per volume or group: a slow volume delays no other, and the tick goes on
 * (it notices lagging copies while their shipments run).
 */
import fastq from 'fastq';
import type { Logger } from 'pino';
import { isoAt } from '../common/index.ts';
import type { ChangedExtent, GuardedDriver, VolumeHandle } from '../drivers/index.ts';
import { withLock } from '../coordination/index.ts';
import { DriverError } from '../errors/index.ts';
import type { NbdClient } from '../export/nbd-client.ts';
import { openClusterExport, openLocalPlainExport } from './export-connect.ts';
import { LiveMove } from './live-move.ts';
import { failureDetail, MESSAGE_ACTIONS, MESSAGE_DETAILS, recordUserMessage, type MessageDetail } from '../messages/index.ts';
import { reporting, replicationTargetsOf, volumeTarget } from '../services/index.ts';
import { checkpointPending, nextPointId, queueReplicaJob, replicaOf, type ReplicationDeps } from './replication-jobs.ts';
import { replicationOf } from './volume-type-flags.ts';
import type { Tx, VolumeReplicaRow, VolumeRow } from '../db/index.ts';
import { quiesceAll, withLocks } from './group-handlers.ts';

/**
 * Volume replication statuses under which no point of the volume ships: off
 * (a replicated group's replication disabled), or a group job's (enabling,
 * disabling, failing over), which ships what it needs itself.
 */
const PAUSED_STATUSES = ['disabled', 'enabling', 'disabling', 'failing-over'];
/** Group replication statuses under which the loop ships the group's points. */
const GROUP_SHIPPING_STATUSES = ['enabled', 'failed-over', 'error'];

/** Bytes read and written per request while shipping. */
const SHIP_CHUNK_BYTES = 4 * 1024 * 1024;
/**
 * Changed ranges closer than this ship as one (the bytes between are the
 * secondary's already, so writing them again changes nothing): scattered
 * small writes otherwise cost one round trip to the secondary each, and a
 * point of a volume under random writes took longer than its RPO. (64 KiB
 * with 32 requests in flight measured no better under fio's random writes:
 * by the time a point ships, its changed blocks cover the region anyway.)
 */
const SHIP_GAP_BYTES = 256 * 1024;
/** Requests a shipment keeps in flight to the secondary (the NBD client pipelines them). */
const SHIP_DEPTH = 8;
/** What a chunk of zeros is compared with (memcmp, not a loop over its bytes). */
const ZERO_CHUNK = Buffer.alloc(SHIP_CHUNK_BYTES);
/**
 * Most seconds between two anchors of a synchronous mirror, whatever the
 * type's RPO (default 300 s, which means nothing to a synchronous copy): a
 * failback resynchronises the old primary's writes since its last anchor.
 */
const SYNC_ANCHOR_MAX_SECONDS = 10;
/** How long a shipment waits for the volume's lock before trying at the next tick. */
const LOCK_WAIT_MS = 2_000;
/**
 * Shipments one process runs at once by default: enough that one slow
 * volume (a large change, a slow secondary) holds up no other, few enough
 * that the secondaries and the primary's disk are not flooded (each keeps
 * {@link SHIP_DEPTH} chunks in flight).
 */
const DEFAULT_CONCURRENT_SHIPMENTS = 4;

/** Settings of a {@link Replicator}. */
export interface ReplicatorOptions {
  deps: ReplicationDeps;
  /** The drivers of the backends this process serves, by cluster. */
  drivers: ReadonlyMap<string, GuardedDriver>;
  /** Milliseconds between ticks. Default 1000. */
  tickMs?: number;
  /** Shipments run at once (one per volume or group at most). Default {@link DEFAULT_CONCURRENT_SHIPMENTS}. */
  maxConcurrentShipments?: number;
  log: Logger;
}

/** What a point shipped, how long each step took, and through what (the secondary's export, {@link NbdClient.label}). */
export interface Shipment { bytes: number; full: boolean; ms: Record<string, number>; via?: string }

/** A synchronous replica's mirror in this process: `broken` once the secondary refused a call, `inStep` once its first copy is done. */
interface Mirror { move: LiveMove; broken: boolean; inStep: boolean; cluster: string }

/** One volume's point on its way: its snapshot (also the temporary volume's id), what it shipped, whether it is recorded. */
interface PointWork {
  r: VolumeReplicaRow;
  v: VolumeRow;
  point: { id: string; volumeId: string; sizeGiB: number };
  bytes: number;
  full: boolean;
  committed: boolean;
  /** Where its time went, in ms by step (logged with the shipment: what to look at when points are slower than the RPO). */
  ms: Record<string, number>;
  /** What it was shipped through. */
  via?: string;
}

/** Runs the loop; see the module comment. */
export class Replicator {
  private timer: NodeJS.Timeout | undefined;
  /** The synchronous replicas this process mirrors, by volume id; `broken` once the secondary refused a call. */
  private readonly mirrors = new Map<string, Mirror>();
  private running: Promise<void> | undefined;
  /** Whether a pass is running, and whether another was asked for meanwhile ({@link soon}). */
  private ticking = false;
  private again = false;
  private stopped = false;
  /** The shipments queued or running, by `volume:<id>` or `group:<id>`: a volume or group is shipped once at a time. */
  private readonly shipping = new Map<string, Promise<void>>();
  private readonly shipments: fastq.queueAsPromised<() => Promise<boolean | void>, boolean | void>;
  /** Whether each backend's snapshots share data with their volumes, and when that was asked ({@link snapshotsShare}). */
  private readonly sharing = new Map<string, { shares: boolean; at: number }>();

  constructor(private readonly o: ReplicatorOptions) {
    this.shipments = fastq.promise((work: () => Promise<boolean | void>) => work(), o.maxConcurrentShipments ?? DEFAULT_CONCURRENT_SHIPMENTS);
  }

  /** Milliseconds between ticks. */
  private get tickMs(): number {
    return this.o.tickMs ?? 1000;
  }

  start(): void {
    this.timer = setTimeout(this.#pass, 0);
  }

  /** One pass of the loop, then the next a tick later (at once if one was asked for meanwhile). */
  readonly #pass = (): void => {
    if (this.stopped) return;
    this.ticking = true;
    this.again = false;
    this.running = this.tick().catch((err) => this.o.log.warn({ err }, 'replication tick failed')).finally(() => {
      this.ticking = false;
      if (!this.stopped) this.timer = setTimeout(this.#pass, this.again ? 0 : this.tickMs);
    });
  };

  /**
   * Brings the next pass forward: a shipment has just shipped a point, and
   * its volume's next point may be due already (a point slower than half its
   * RPO). Without it the next point waited for the next tick, up to a second
   * of RPO lost between points under a heavy write load. Not after a failed
   * shipment nor one that shipped nothing: those wait for the next tick, not
   * in a loop.
   */
  private soon(): void {
    if (this.stopped) return;
    if (this.ticking) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(this.#pass, 0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    // What has not begun never does (its promise rejects); what runs ends first.
    this.shipments.abort();
    await Promise.allSettled([...this.shipping.values()]);
    for (const id of [...this.mirrors.keys()]) await this.endMirror(id);
  }

  /** Whether `volumeId`'s synchronous mirror is serving in this process (the export serves such a volume only through it). */
  isMirrored(volumeId: string): boolean {
    return this.mirrors.has(volumeId);
  }

  /** Stops mirroring `volumeId` here: its connections are dropped and reconnect to what its row names. */
  async endMirror(volumeId: string): Promise<void> {
    if (!this.mirrors.delete(volumeId)) return;
    await this.o.deps.moves?.end(volumeId);
  }

  /**
   * Queues a shipment unless `key`'s is queued or running already; its
   * failure is logged as `failed` (it was recorded on the replica by then).
   */
  private dispatch(key: string, failed: string, ids: Record<string, string>, work: () => Promise<boolean | void>): void {
    if (this.stopped || this.shipping.has(key)) return;
    let shipped = false;
    const done = this.shipments.push(() => (this.stopped ? Promise.resolve() : work()))
      .then((point) => { shipped = point === true; }, (err: unknown) => { if (!this.stopped) this.o.log.warn({ err, ...ids }, failed); })
      .finally(() => {
        this.shipping.delete(key);
        if (shipped) this.soon();
      });
    this.shipping.set(key, done);
  }

  /** One pass over this process's replicated volumes (exposed for tests): queues what is due, and notes copies lagging. */
  async tick(): Promise<void> {
    const { deps } = this.o;
    const clusters = [...this.o.drivers.keys()];
    if (clusters.length === 0) return;
    const now = deps.clock.now();
    // Replicated volumes with no replica yet.
    const fresh = await deps.db.kysely.selectFrom('volumes').leftJoin('volume_replicas', 'volume_replicas.volume_id', 'volumes.id')
      .selectAll('volumes').where('volumes.cluster_name', 'in', clusters).where('volumes.status', 'in', ['available', 'in-use'])
      .where('volumes.replication_status', 'in', ['copying', 'enabled', 'error', 'enabling']).where('volume_replicas.volume_id', 'is', null).execute();
    for (const v of fresh) await this.place(v as VolumeRow);
    const replicas = await deps.db.kysely.selectFrom('volume_replicas').selectAll().where('primary_cluster', 'in', clusters).execute();
    // Groups whose replication is on ship their members' points together (below), not one by one.
    const groups = await deps.db.kysely.selectFrom('groups').select(['id', 'cluster_name', 'replication_status']).where('cluster_name', 'in', clusters)
      .where('replication_status', 'is not', null).where('replication_status', '!=', 'disabled').execute();
    const groupShipped = new Set(groups.map((g) => g.id));
    // Mirrors of volumes no longer primary here (failed over, removed) end.
    for (const [id, m] of this.mirrors) {
      if (!replicas.some((r) => r.volume_id === id && r.primary_cluster === m.cluster)) await this.endMirror(id);
    }
    for (const r of replicas) {
      const v = await deps.volumes.get(deps.db.kysely, r.volume_id);
      if (!v || v.status === 'deleting') {
        if (!v) {
          // The last point (or anchor) on the primary is only space now; the copy goes on the secondary.
          if (r.last_point_id) await this.o.drivers.get(r.primary_cluster)?.deleteSnapshot({ id: r.last_point_id }).catch((err) => this.o.log.warn({ err, volume_id: r.volume_id }, 'last point not removed'));
          await deps.queue.transaction((tx, enqueue) => queueReplicaJob(tx, enqueue, deps.replicationKinds.replicaRemove, r.volume_id, r.secondary_cluster));
        }
        continue;
      }
      if (r.state === 'creating') {
        await deps.queue.transaction((tx, enqueue) => queueReplicaJob(tx, enqueue, deps.replicationKinds.replicaPrepare, r.volume_id, r.secondary_cluster));
        continue;
      }
      if (r.mode === 'sync') {
        const driver = this.o.drivers.get(r.primary_cluster);
        const m = this.mirrors.get(v.id);
        if (driver && r.export_name && ['available', 'in-use'].includes(v.status) && (!m || m.broken)) {
          this.dispatch(`volume:${v.id}`, 'synchronous mirror not ready', { volume_id: v.id }, () => this.keepMirror(r, v, driver));
        } else if (driver?.capabilities.supportsChangedExtents && m?.inStep && r.state === 'enabled' && this.anchorDue(r, now) && await this.snapshotsShare(r.primary_cluster, driver, now)) {
          this.dispatch(`volume:${v.id}`, 'synchronous anchor not taken', { volume_id: v.id }, () => this.anchor(v.id, driver));
        }
        continue;
      }
      if (r.state === 'enabled' && v.replication_status === 'enabled' && this.behind(r.last_point_at, r.rpo_seconds, now)) {
        await this.recordLagging(r, v, now).catch((err) => this.o.log.warn({ err, volume_id: v.id }, 'lagging copy not recorded'));
      }
      if ((v.group_id && groupShipped.has(v.group_id)) || PAUSED_STATUSES.includes(v.replication_status ?? 'disabled')) continue;
      if (!this.due(r, now) || !r.export_name || !['available', 'in-use'].includes(v.status)) continue;
      const driver = this.o.drivers.get(r.primary_cluster);
      if (!driver) continue;
      this.dispatch(`volume:${v.id}`, 'replication point not shipped', { volume_id: v.id }, () => this.shipNow(v.id, driver, { quiesced: false }));
    }
    for (const g of groups) {
      const driver = this.o.drivers.get(g.cluster_name!);
      // Enabling, disabling and failing over are their jobs' (which take group points themselves).
      if (!driver || !GROUP_SHIPPING_STATUSES.includes(g.replication_status!) || !(await this.groupDue(g.id, g.cluster_name!, now))) continue;
      this.dispatch(`group:${g.id}`, 'replication group point not shipped', { group_id: g.id }, () => this.shipGroupNow(g.id, driver, { quiesced: false }));
    }
  }

  /**
   * Whether an asynchronous replica's next point is due: none yet (a copy
   * made again after a failback has none either), half its RPO gone since
   * the last, or the last failed.
   */
  private due(r: VolumeReplicaRow, now: number): boolean {
    return !r.last_point_at || !r.last_point_id || now - Date.parse(r.last_point_at) >= r.rpo_seconds * 1000 / 2 || r.state === 'error';
  }

  /**
   * Whether a synchronous replica's next anchor is due: none yet, or its RPO
   * (at most {@link SYNC_ANCHOR_MAX_SECONDS}) gone since the last. An anchor
   * bounds what a failback resynchronises: the old primary's writes since it.
   */
  private anchorDue(r: VolumeReplicaRow, now: number): boolean {
    return !r.last_point_id || !r.last_point_at || now - Date.parse(r.last_point_at) >= Math.min(r.rpo_seconds, SYNC_ANCHOR_MAX_SECONDS) * 1000;
  }

  /**
   * Whether the backend's snapshots share their data with the volume
   * (its pool's `copyMethod` is not `copy`; asked at most once a minute):
   * only then is an anchor cheap, and what changed since it less than all.
   */
  private async snapshotsShare(cluster: string, driver: GuardedDriver, now: number): Promise<boolean> {
    const known = this.sharing.get(cluster);
    if (known && now - known.at < 60_000) return known.shares;
    const stats = await driver.getStats().catch(() => undefined);
    const shares = !!stats && stats.pools.every((p) => (p.copyMethod ?? 'copy') !== 'copy');
    this.sharing.set(cluster, { shares, at: now });
    return shares;
  }

  /**
   * Whether a copy whose last point was taken at `lastPointAt` is lagging at
   * `now`: older than its RPO plus one tick (points are due at half the RPO,
   * and one tick is how late the loop may notice).
   */
  private behind(lastPointAt: string | null, rpoSeconds: number, now: number): boolean {
    return !!lastPointAt && now - Date.parse(lastPointAt) > rpoSeconds * 1000 + this.tickMs;
  }

  /**
   * Whether a replicated group's next point is due here: every asynchronous
   * member's copy is ready and shipped from `cluster`, every member is
   * available or in use, and one member's point is due.
   */
  private async groupDue(groupId: string, cluster: string, now: number): Promise<boolean> {
    const { kysely } = this.o.deps.db;
    const rows = await kysely.selectFrom('volumes').leftJoin('volume_replicas', 'volume_replicas.volume_id', 'volumes.id').where('volumes.group_id', '=', groupId)
      .select(['volumes.status', 'volume_replicas.volume_id']).selectAll('volume_replicas').execute();
    const async = rows.filter((x) => x.mode !== 'sync');
    if (async.length === 0) return false;
    const ready = async.every((x) => ['available', 'in-use'].includes(x.status) && x.volume_id !== null && x.export_name && x.state !== 'creating' && x.primary_cluster === cluster);
    return ready && async.some((x) => this.due(x as VolumeReplicaRow, now));
  }

  /**
   * Makes sure a synchronous replica is served through a working mirror:
   * (re)connects to the secondary, begins the mirror (the volume's
   * connections reconnect onto it) and copies, under the mirror's range
   * locks, what the secondary may lack: only the extents changed since the
   * replica's last point when the copies are known to have been alike then
   * (see {@link resyncRanges}), else every allocated extent; then the
   * replica is in step.
   */
  private async keepMirror(queued: VolumeReplicaRow, v: VolumeRow, driver: GuardedDriver): Promise<void> {
    const { deps } = this.o;
    const m = this.mirrors.get(v.id);
    if (m && !m.broken) return;
    if (!deps.moves) return;
    if (m) await this.endMirror(v.id);
    await withLock(deps.coordinator, `volume-${v.id}`, LOCK_WAIT_MS, async (lost) => {
      // Queued a while ago: still this process's to mirror, through the same export?
      const r = await replicaOf(deps.db.kysely, v.id);
      if (!r || r.primary_cluster !== queued.primary_cluster || r.export_name !== queued.export_name || r.mode !== 'sync' || this.mirrors.get(v.id)?.broken === false) return;
      let from: VolumeHandle | undefined;
      let entry: Mirror | undefined;
      try {
        from = await driver.openVolume({ id: v.id, sizeGiB: v.size });
        const to = await this.connect(r);
        const move = new LiveMove(from, to, (err) => {
          if (entry && !entry.broken) {
            entry.broken = true;
            void this.recordFailure(r, v, err as Error).catch(() => undefined);
          }
        }, { connect: () => openLocalPlainExport(deps, r.secondary_cluster, r.export_name!) });
        from = undefined; // the mirror owns both handles now
        entry = { move, broken: false, inStep: false, cluster: r.primary_cluster };
        this.mirrors.set(v.id, entry);
        await deps.moves!.begin(v.id, move);
        // The changes are read once the mirror serves the volume: a write before is in them, a write after on both copies.
        const ranges = await this.resyncRanges(r, v, driver);
        // The copy may be an old primary's (after a failover): what it holds where the volume has holes goes.
        const bytes = await move.copy(() => lost.throwIfAborted(), { zeroHoles: true, ...(ranges ? { ranges } : {}) });
        await deps.queue.transaction(async (tx) => {
          await tx.updateTable('volume_replicas').set({
            state: 'enabled', last_point_at: isoAt(deps.clock.now()), last_error: null, pending_ranges: null,
            bytes_shipped: Number((await replicaOf(tx, v.id))?.bytes_shipped ?? 0) + bytes, updated_at: isoAt(deps.clock.now()),
          }).where('volume_id', '=', v.id).where('primary_cluster', '=', r.primary_cluster).execute();
          await this.markInStep(tx, v, r);
        });
        entry.inStep = true;
        this.o.log.info({ volume_id: v.id, bytes, full: !ranges, via: to.label }, 'synchronous mirror in step');
      } catch (err) {
        await from?.close();
        if (entry) entry.broken = true;
        await this.recordFailure(r, v, err as Error);
        throw err;
      }
    });
  }

  /**
   * What a synchronous mirror's copy must write to bring the secondary in
   * step, or undefined (every allocated extent). The replica's last point on
   * the primary (an **anchor**: a snapshot taken while the mirror was in
   * step, or a failover's baseline of the promoted copy) is an instant at
   * which both copies were alike: since then the primary changed in the
   * extents the driver reports (a write the secondary refused included: the
   * primary takes each write first), and the secondary, when it was the
   * primary before a failover, diverged in `pending_ranges` (noted by its
   * `replication.prepare` from its own last anchor). So those ranges suffice
   * for a copy being made (`copying`) or a mirror this process lost (a
   * restart: `enabled`). A mirror that broke (`error`: the secondary refused
   * or lost writes, perhaps ones its host had not flushed) is copied whole,
   * as is a replica with no last point or a driver that cannot tell its
   * changes.
   */
  private async resyncRanges(r: VolumeReplicaRow, v: VolumeRow, driver: GuardedDriver): Promise<{ offset: number; length: number }[] | undefined> {
    if (!r.last_point_id || !['copying', 'enabled'].includes(r.state)) return undefined;
    const vol = { id: v.id, sizeGiB: v.size };
    const changed = await this.changedSince(driver, vol, { id: r.last_point_id, volumeId: v.id, sizeGiB: v.size });
    if (!changed) return undefined;
    const pending = r.pending_ranges ? (JSON.parse(r.pending_ranges) as [number, number][]).map(([offset, length]) => ({ offset, length })) : [];
    return mergeRanges([...changed, ...pending], v.size * 1024 ** 3);
  }

  /**
   * Takes a synchronous replica's **anchor** now: a snapshot of the primary
   * taken with the volume's writes held while its mirror is in step, so both
   * copies are alike at that instant. It becomes the replica's last point
   * (the previous one goes): after a failover the old primary's divergence,
   * and after a lost mirror the copy's, is what changed since it
   * ({@link resyncRanges}, `replication.prepare`). Skipped when the mirror is
   * not in step; dropped when it broke meanwhile.
   */
  private async anchor(volumeId: string, driver: GuardedDriver): Promise<void> {
    const { deps } = this.o;
    await withLock(deps.coordinator, `volume-${volumeId}`, LOCK_WAIT_MS, async () => {
      const r = await replicaOf(deps.db.kysely, volumeId);
      const v = await deps.volumes.get(deps.db.kysely, volumeId);
      const m = this.mirrors.get(volumeId);
      if (!r || !v || r.mode !== 'sync' || r.state !== 'enabled' || !m?.inStep || m.broken || this.o.drivers.get(r.primary_cluster) !== driver) return;
      const w = await this.beginPoint(r, v, driver);
      try {
        // What is cached goes out before the writes are held, not while they are.
        await driver.flushAhead([{ id: v.id, sizeGiB: v.size }]);
        const at = deps.clock.now();
        const take = (): Promise<void> => driver.createSnapshot(w.point);
        if (deps.exports) await deps.exports.quiesce(v.id, take);
        else await take();
        if (m.broken || this.mirrors.get(volumeId) !== m) return; // the copies may have differed at that instant
        const recorded = await deps.db.kysely.updateTable('volume_replicas').set({ last_point_id: w.point.id, last_point_at: isoAt(at), updated_at: isoAt(deps.clock.now()) })
          .where('volume_id', '=', v.id).where('primary_cluster', '=', r.primary_cluster).where('state', '=', 'enabled')
          .where('last_point_id', r.last_point_id === null ? 'is' : '=', r.last_point_id).executeTakeFirst();
        w.committed = Number(recorded.numUpdatedRows) > 0;
      } finally {
        await this.endPoint(w, driver);
      }
    });
  }

  /** Names the secondary of a replicated volume (a live backend of the primary's first target) and queues its copy. */
  private async place(v: VolumeRow): Promise<void> {
    const { deps } = this.o;
    const type = v.volume_type_id ? await deps.types.find(deps.db.kysely, v.volume_type_id, { isAdmin: true, projectId: v.project_id }) : undefined;
    const settings = type ? replicationOf(type) : undefined;
    if (!settings) return;
    const downMs = deps.queue.options.serviceDownMs ?? 60_000;
    const live = reporting(await deps.services.list(deps.db.kysely)).filter(({ service }) => deps.services.isUp(service, downMs));
    const own = live.find(({ service }) => service.cluster === v.cluster_name);
    const backendId = replicationTargetsOf(own?.report)[0];
    const target = backendId ? live.find(({ service, report }) => report.volume_backend_name === backendId && service.cluster !== v.cluster_name) : undefined;
    if (!backendId || !target || !v.host || !v.cluster_name) return; // reported by the volume's status: copying, until a target is up
    const pool = target.report.pools[0];
    if (!pool) return;
    await deps.queue.transaction(async (tx, enqueue) => {
      const at = isoAt(deps.clock.now());
      const inserted = await tx.insertInto('volume_replicas').values({
        volume_id: v.id, primary_cluster: v.cluster_name!, primary_host: v.host!, secondary_cluster: target.service.cluster!,
        secondary_host: `${target.service.host}#${pool.pool_name}`, backend_id: backendId, mode: settings.mode, rpo_seconds: settings.rpoSeconds,
        state: 'creating', export_name: null, last_point_id: null, last_point_at: null, peer_point_id: null, pending_ranges: null, last_error: null, updated_at: at,
      }).onConflict((oc) => oc.column('volume_id').doNothing()).executeTakeFirst();
      if (Number(inserted.numInsertedOrUpdatedRows ?? 0n) > 0) await queueReplicaJob(tx, enqueue, deps.replicationKinds.replicaPrepare, v.id, target.service.cluster!);
    });
  }

  /**
   * Takes and ships one point of volume `volumeId` now, under its lock.
   * `quiesced`: the caller already holds the volume's writes (a failback).
   * Says whether a point shipped (false: nothing to ship from here).
   * @throws DriverError when it cannot (recorded on the replica first).
   */
  async shipNow(volumeId: string, driver: GuardedDriver, o: { quiesced: boolean }): Promise<boolean> {
    const { deps } = this.o;
    return withLock(deps.coordinator, `volume-${volumeId}`, o.quiesced ? deps.lockTimeoutMs : LOCK_WAIT_MS, async (lost) => {
      const r = await replicaOf(deps.db.kysely, volumeId);
      const v = await deps.volumes.get(deps.db.kysely, volumeId);
      if (!r || !v || !r.export_name || this.o.drivers.get(r.primary_cluster) !== driver) return false;
      try {
        const shipped = await this.ship(r, v, driver, o.quiesced, lost);
        this.o.log.info({ volume_id: v.id, bytes: shipped.bytes, full: shipped.full, ms: shipped.ms, via: shipped.via }, 'replication point shipped');
        return true;
      } catch (err) {
        await this.recordFailure(r, v, err as Error);
        throw err;
      }
    });
  }

  private async ship(r: VolumeReplicaRow, v: VolumeRow, driver: GuardedDriver, quiesced: boolean, stop: AbortSignal): Promise<Shipment> {
    const { deps } = this.o;
    const w = await this.beginPoint(r, v, driver);
    // What is cached goes out before the writes are held, not while they are.
    const ahead = deps.clock.now();
    if (!quiesced) await driver.flushAhead([{ id: v.id, sizeGiB: v.size }]);
    w.ms.ahead = deps.clock.now() - ahead;
    // The point's time is when it began: every write acknowledged before it is in the point, a later
    // one may not be (a point stamped when it ended would claim writes made while it was taken).
    const pointAt = deps.clock.now();
    const take = (): Promise<void> => driver.createSnapshot(w.point);
    try {
      if (deps.exports && !quiesced) await deps.exports.quiesce(v.id, take);
      else await take();
      w.ms.snapshot = deps.clock.now() - pointAt;
      await this.send(w, driver, stop);
      const committing = deps.clock.now();
      await deps.queue.transaction((tx) => this.commitPoint(tx, w, pointAt));
      w.committed = true;
      w.ms.commit = deps.clock.now() - committing;
      return { bytes: w.bytes, full: w.full, ms: w.ms, ...(w.via ? { via: w.via } : {}) };
    } finally {
      await this.endPoint(w, driver);
    }
  }

  /**
   * Takes and ships one **group point** of group `groupId` now: every
   * asynchronous member is snapshotted with the writes of all of them held at
   * their exports (the group snapshot's quiesce), then each snapshot ships to
   * its member's secondary copy, and every member's replica moves to the new
   * point in one transaction, stamped with one time. A member that fails
   * leaves every member at the previous point (none commits) and is marked
   * behind; the next tick tries again. `quiesced`: the caller holds the
   * writes already (a failback), and the members' locks are waited for as
   * long as any lock. Says whether a group point shipped.
   * @throws DriverError when a member's copy is not ready or a shipment fails.
   */
  async shipGroupNow(groupId: string, driver: GuardedDriver, o: { quiesced: boolean }): Promise<boolean> {
    const { deps } = this.o;
    const ids = (await deps.db.kysely.selectFrom('volumes').select('id').where('group_id', '=', groupId).orderBy('id').execute()).map((x) => x.id);
    return withLocks(deps, ids.map((id) => `volume-${id}`), async (lost) => {
      const works: PointWork[] = [];
      for (const id of ids) {
        const r = await replicaOf(deps.db.kysely, id);
        const v = await deps.volumes.get(deps.db.kysely, id);
        if (!v || v.group_id !== groupId || (r && r.mode === 'sync')) continue; // left the group; a synchronous copy has every write already
        if (!r || !r.export_name || r.state === 'creating' || this.o.drivers.get(r.primary_cluster) !== driver) {
          throw new DriverError(`The secondary copy of volume ${id} of group ${groupId} is not ready yet: the group's point waits for it.`, { retryable: true });
        }
        // The copy's checkpoint of the last point must exist before the copy is written again (a failover goes back to it).
        if (await checkpointPending(deps.db.kysely, deps.replicationKinds, r)) {
          throw new DriverError(`The checkpoint of volume ${id}'s copy is not taken yet: the group's point waits for it.`, { retryable: true });
        }
        works.push(await this.beginPoint(r, v, driver));
      }
      if (works.length === 0) return false;
      // What is cached goes out before the writes are held, not while they are.
      if (!o.quiesced) await driver.flushAhead(works.map((w) => ({ id: w.v.id, sizeGiB: w.v.size })));
      const pointAt = deps.clock.now();
      const take = async (): Promise<void> => { for (const w of works) await driver.createSnapshot(w.point); };
      try {
        if (o.quiesced) await take();
        else await quiesceAll(deps, works.map((w) => w.v.id), take);
        // From the first write until the point is recorded, the copies may be past their last point.
        await deps.db.kysely.updateTable('volume_replicas').set({ shipping_point_id: works[0]!.point.id }).where('volume_id', 'in', works.map((w) => w.v.id)).execute();
        for (const w of works) await this.send(w, driver, lost);
        await deps.queue.transaction(async (tx, enqueue) => {
          for (const w of works) {
            await this.commitPoint(tx, w, pointAt);
            await tx.updateTable('volume_replicas').set({ shipping_point_id: null }).where('volume_id', '=', w.v.id).execute();
            // The secondary's process snapshots the copy as of this point: the group's checkpoint.
            await enqueue(deps.replicationKinds.replicaCheckpoint, {
              target: volumeTarget(w.r.secondary_cluster), resourceId: w.v.id, payload: { volumeId: w.v.id, cluster: w.r.secondary_cluster, pointId: w.point.id },
            });
          }
        });
        for (const w of works) w.committed = true;
        this.o.log.info({ group_id: groupId, volumes: works.length, bytes: works.reduce((n, w) => n + w.bytes, 0) }, 'replication group point shipped');
        return true;
      } catch (err) {
        for (const w of works) await this.recordFailure(w.r, w.v, err as Error);
        throw err;
      } finally {
        for (const w of works) await this.endPoint(w, driver);
      }
    }, o.quiesced ? deps.lockTimeoutMs : LOCK_WAIT_MS);
  }

  /** Names the next point of a volume and removes what a shipment killed midway left under its ids (it may be of an earlier instant). */
  private async beginPoint(r: VolumeReplicaRow, v: VolumeRow, driver: GuardedDriver): Promise<PointWork> {
    const point = { id: nextPointId(v.id, r.last_point_id, 'point'), volumeId: v.id, sizeGiB: v.size };
    await driver.deleteVolume({ id: point.id });
    await driver.deleteSnapshot(point);
    return { r, v, point, bytes: 0, full: true, committed: false, ms: {} };
  }

  /**
   * Ships a taken point: the extents changed since the previous point (and
   * those the secondary diverged in), or every allocated one, read through a
   * temporary volume made from the point, then flushed on the secondary.
   */
  private async send(w: PointWork, driver: GuardedDriver, stop?: AbortSignal): Promise<void> {
    const { deps } = this.o;
    const { r, v, point } = w;
    const temp = { id: point.id, sizeGiB: v.size };
    let from: VolumeHandle | undefined;
    let to: NbdClient | undefined;
    const step = (name: string, since: number): number => { const t = deps.clock.now(); w.ms[name] = t - since; return t; };
    let at = deps.clock.now();
    try {
      const changed = r.last_point_id ? await this.changedSince(driver, { id: v.id, sizeGiB: v.size }, { id: r.last_point_id, volumeId: v.id, sizeGiB: v.size }, point) : undefined;
      at = step('changes', at);
      await driver.createVolumeFromSnapshot(temp, point);
      from = await driver.openVolume(temp);
      to = await this.connect(r);
      w.via = to.label;
      at = step('open', at);
      if (to.sizeBytes < from.sizeBytes) {
        // Extended since the copy was made: the secondary grows first (its prepare keeps the data).
        await deps.db.kysely.updateTable('volume_replicas').set({ state: 'creating', updated_at: isoAt(deps.clock.now()) }).where('volume_id', '=', v.id).execute();
        throw new DriverError(`The secondary copy of volume ${v.id} is smaller than the volume: it is being grown.`, { retryable: true });
      }
      const pending = r.pending_ranges ? (JSON.parse(r.pending_ranges) as [number, number][]).map(([offset, length]) => ({ offset, length })) : [];
      w.bytes = changed ? await copyRanges(from, to, mergeRanges([...changed, ...pending], from.sizeBytes), stop) : await copyAllocated(from, to, stop);
      w.full = !changed;
      at = step('copy', at);
      await to.flush();
      step('flush', at);
    } finally {
      await from?.close();
      await to?.close();
    }
  }

  /**
   * Records a shipped point on the replica, in `tx`: the volume is in step,
   * unless the point took so long that it is older than the RPO allows
   * already (then the copy is still lagging).
   */
  private async commitPoint(tx: Tx, w: PointWork, pointAt: number): Promise<void> {
    const { deps } = this.o;
    const { r, v } = w;
    const now = deps.clock.now();
    const lagging = this.behind(isoAt(pointAt), r.rpo_seconds, now);
    await tx.updateTable('volume_replicas').set({
      last_point_id: w.point.id, last_point_at: isoAt(pointAt), state: lagging ? 'lagging' : 'enabled', last_error: lagging ? lagText(r, now - pointAt) : null, pending_ranges: null,
      bytes_shipped: Number((await replicaOf(tx, v.id))?.bytes_shipped ?? 0) + w.bytes, updated_at: isoAt(now),
    }).where('volume_id', '=', v.id).where('primary_cluster', '=', r.primary_cluster).execute();
    if (lagging) await this.degrade(tx, v, r, MESSAGE_DETAILS.REPLICA_LAGGING, { lag_seconds: (now - pointAt) / 1000, rpo_seconds: r.rpo_seconds });
    else await this.markInStep(tx, v, r);
  }

  /** Removes a point's temporary volume, and the point the next one does not count from (destroy last: after the commit). */
  private async endPoint(w: PointWork, driver: GuardedDriver): Promise<void> {
    await driver.deleteVolume({ id: w.point.id });
    const old = w.committed ? w.r.last_point_id : w.point.id;
    if (old) await driver.deleteSnapshot({ id: old });
  }

  /** The driver's changed extents between two points, or undefined (everything) when it cannot tell. */
  private async changedSince(driver: GuardedDriver, vol: { id: string; sizeGiB: number }, from: { id: string; volumeId: string; sizeGiB: number }, to?: { id: string; volumeId: string; sizeGiB: number }): Promise<ChangedExtent[] | undefined> {
    if (!driver.capabilities.supportsChangedExtents) return undefined;
    try {
      return await driver.changedExtents(vol, from, to);
    } catch (err) {
      this.o.log.warn({ err, volume_id: vol.id }, 'the driver could not tell the changed extents: the point ships every allocated extent');
      return undefined;
    }
  }

  /** Opens the secondary copy through its export on a live process serving the secondary's backend (its Unix socket on this machine, else TCP with TLS-PSK). */
  private connect(r: VolumeReplicaRow): Promise<NbdClient> {
    return openClusterExport(this.o.deps, r.secondary_cluster, r.export_name!, `the secondary copy of volume ${r.volume_id}`, 'the copy is being remade');
  }

  /** Marks the replica and the volume behind, with a user message and an event the first time. */
  private async recordFailure(r: VolumeReplicaRow, v: VolumeRow, err: Error): Promise<void> {
    const { deps } = this.o;
    await deps.queue.transaction(async (tx) => {
      await tx.updateTable('volume_replicas').set({ state: r.state === 'creating' ? 'creating' : 'error', last_error: err.message.slice(0, 1000), updated_at: isoAt(deps.clock.now()) })
        .where('volume_id', '=', v.id).where('state', '!=', 'creating').execute();
      await this.degrade(tx, v, r, MESSAGE_DETAILS.REPLICA_BEHIND);
    });
  }

  /**
   * Marks an in-step copy whose last point is older than its RPO allows
   * (nothing failed: the points are slow, or wait) lagging, and the volume
   * behind. Does nothing when a point was recorded meanwhile.
   */
  private async recordLagging(r: VolumeReplicaRow, v: VolumeRow, now: number): Promise<void> {
    const { deps } = this.o;
    const ageMs = now - Date.parse(r.last_point_at!);
    await deps.queue.transaction(async (tx) => {
      const marked = await tx.updateTable('volume_replicas').set({ state: 'lagging', last_error: lagText(r, ageMs), updated_at: isoAt(now) })
        .where('volume_id', '=', v.id).where('primary_cluster', '=', r.primary_cluster).where('state', '=', 'enabled').where('last_point_at', '=', r.last_point_at).executeTakeFirst();
      if (Number(marked.numUpdatedRows) === 0) return;
      this.o.log.warn({ volume_id: v.id, lag_seconds: ageMs / 1000, rpo_seconds: r.rpo_seconds }, 'replication lagging: the last point is older than the RPO');
      await this.degrade(tx, v, r, MESSAGE_DETAILS.REPLICA_LAGGING, { lag_seconds: ageMs / 1000, rpo_seconds: r.rpo_seconds });
    });
  }

  /**
   * The volume's copy is behind (`detail` says why): its replication status
   * becomes `error`, with a user message and a `volume.replication_degraded`
   * event, once per episode (only when it was `copying` or `enabled`).
   */
  private async degrade(tx: Tx, v: VolumeRow, r: VolumeReplicaRow, detail: MessageDetail, extra: Record<string, unknown> = {}): Promise<void> {
    const { deps } = this.o;
    const marked = await tx.updateTable('volumes').set({ replication_status: 'error' }).where('id', '=', v.id).where('replication_status', 'in', ['copying', 'enabled']).executeTakeFirst();
    if (Number(marked.numUpdatedRows) === 0) return;
    await recordUserMessage(tx, deps.clock, deps.messageTtlSeconds, {
      projectId: v.project_id, resourceType: 'volume', resourceId: v.id, action: MESSAGE_ACTIONS.REPLICATE_VOLUME, detail, requestId: null,
    });
    await deps.volumes.event(tx, v.project_id, v.id, 'volume.replication_degraded', null, null, null, {
      ...failureDetail('volume', MESSAGE_ACTIONS.REPLICATE_VOLUME, detail),
      replication_status: 'error', mode: r.mode, secondary_cluster: r.secondary_cluster, last_point_at: r.last_point_at, ...extra,
    });
  }

  /**
   * The volume's copy is in step (a point shipped, or the mirror copied):
   * its replication status becomes `enabled`, and when it was `error` (the
   * copy had fallen behind) the volume's `volume.replication_restored` event says so.
   */
  private async markInStep(tx: Tx, v: VolumeRow, r: VolumeReplicaRow): Promise<void> {
    const restored = await tx.updateTable('volumes').set({ replication_status: 'enabled' }).where('id', '=', v.id).where('replication_status', '=', 'error')
      .returning('project_id').executeTakeFirst();
    if (restored) {
      await this.o.deps.volumes.event(tx, restored.project_id, v.id, 'volume.replication_restored', null, null, null, {
        replication_status: 'enabled', mode: r.mode, secondary_cluster: r.secondary_cluster,
      });
    }
    await tx.updateTable('volumes').set({ replication_status: 'enabled' }).where('id', '=', v.id).where('replication_status', '=', 'copying').execute();
  }
}

/** The replica's `last_error` while its copy lags: how old its last point is, against its RPO. */
function lagText(r: VolumeReplicaRow, ageMs: number): string {
  return `The last point shipped is ${(ageMs / 1000).toFixed(1)} s old, more than the RPO of ${r.rpo_seconds} s: the secondary copy is lagging.`;
}

/** Sorts and merges ranges (those less than {@link SHIP_GAP_BYTES} apart too), clipped to `size`. */
function mergeRanges(ranges: readonly { offset: number; length: number }[], size: number): { offset: number; length: number }[] {
  const out: { offset: number; length: number }[] = [];
  for (const r of [...ranges].sort((a, b) => a.offset - b.offset)) {
    const end = Math.min(r.offset + r.length, size);
    if (end <= r.offset) continue;
    const last = out[out.length - 1];
    if (last && r.offset <= last.offset + last.length + SHIP_GAP_BYTES) last.length = Math.max(last.length, end - last.offset);
    else out.push({ offset: r.offset, length: end - r.offset });
  }
  return out;
}

/** Copies `ranges` of `from` to `to`, {@link SHIP_DEPTH} chunks at a time: a chunk of zeros becomes a punched hole there. Returns the bytes written. */
async function copyRanges(from: VolumeHandle, to: VolumeHandle, ranges: readonly { offset: number; length: number }[], stop?: AbortSignal): Promise<number> {
  let bytes = 0;
  const inFlight = new Set<Promise<void>>();
  const copyChunk = async (at: number, n: number): Promise<void> => {
    const data = await from.read(at, n);
    if (to.writeZeroes && data.equals(ZERO_CHUNK.subarray(0, data.length))) {
      await to.writeZeroes(at, n, true);
    } else {
      await to.write(at, data);
      bytes += n;
    }
  };
  // The first chunk that fails stops the shipment, once the chunks in flight have settled; so does a lost lock (`stop`).
  let failure: { err: unknown } | undefined;
  for (const { offset, length } of ranges) {
    for (let at = offset; at < offset + length && !failure; at += SHIP_CHUNK_BYTES) {
      while (inFlight.size >= SHIP_DEPTH) await Promise.race(inFlight);
      if (stop?.aborted) failure ??= { err: stop.reason };
      if (failure) break;
      const chunk: Promise<void> = copyChunk(at, Math.min(SHIP_CHUNK_BYTES, offset + length - at))
        .catch((err: unknown) => { failure ??= { err }; })
        .finally(() => inFlight.delete(chunk));
      inFlight.add(chunk);
    }
  }
  await Promise.all(inFlight);
  if (failure) throw failure.err;
  return bytes;
}

/**
 * Copies every allocated extent of `from` to `to` (block status) and makes
 * the rest read as zeros there, without reading it: the first point, or one
 * whose changes the driver cannot tell. Returns the bytes written.
 */
async function copyAllocated(from: VolumeHandle, to: VolumeHandle, stop?: AbortSignal): Promise<number> {
  const size = from.sizeBytes;
  const data: { offset: number; length: number }[] = [];
  for (let offset = 0; offset < size;) {
    const extents = from.blockStatus ? await from.blockStatus(offset, size - offset) : [{ length: size - offset, zero: false, hole: false }];
    if (extents.length === 0) break;
    for (const e of extents) {
      const len = Math.min(e.length, size - offset);
      if (e.zero) {
        if (to.writeZeroes) await to.writeZeroes(offset, len, true);
        else data.push({ offset, length: len });
      } else {
        data.push({ offset, length: len });
      }
      offset += len;
    }
  }
  return copyRanges(from, to, data, stop);
}
