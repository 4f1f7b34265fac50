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
 */
import type { Logger } from 'pino';
import type { Clock } from '../common/index.ts';
import type { Db, ServiceRepository, VolumeRepository, VolumeTypeRepository, VolumeRow } from '../db/index.ts';
import type { GuardedDriver } from '../drivers/index.ts';
import { failUnreplicated, FAILBACK_ID, type FailoverPayload, type ReplicationDeps } from './replication-jobs.ts';
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
    const now = this.o.clock.now();
    for (const v of vols) {
      const type = v.volume_type_id ? await this.o.types.find(db.kysely, v.volume_type_id, { isAdmin: true, projectId: v.project_id }) : undefined;
      const settings = type ? replicationOf(type) : undefined;
      if (!type || !settings) continue;
      const ref = { id: v.id, sizeGiB: v.size };
      try {
        if (this.enabled.get(v.id) !== want) {
          await driver.enableReplication(ref, { mode: type.extra_specs[RBD_MIRROR_MODE_SPEC]?.trim() === 'journal' ? 'journal' : 'snapshot' });
          this.enabled.set(v.id, want);
        }
        if (now - (this.lastPointAt.get(v.id) ?? 0) >= settings.rpoSeconds * 1000 / 2) {
          await driver.replicationPoint(ref);
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
export async function failOverInDriver(deps: ReplicationDeps, driver: GuardedDriver, p: FailoverPayload, requestId: string | null): Promise<void> {
  const { db } = deps;
  const back = p.backendId === FAILBACK_ID;
  const vols = await db.kysely.selectFrom('volumes').select(['id', 'project_id', 'size', 'replication_status']).where('cluster_name', '=', p.cluster)
    .where('replication_status', 'in', back ? ['failed-over', 'error'] : [...SHOWN, 'failed-over']).execute();
  const { failed } = await driver.failOver(p.backendId, vols.map((v) => ({ id: v.id, sizeGiB: v.size })));
  await db.kysely.transaction().execute(async (tx) => {
    for (const v of vols) {
      const status = failed.includes(v.id) ? 'error' : back ? 'enabled' : 'failed-over';
      await tx.updateTable('volumes').set({ replication_status: status }).where('id', '=', v.id).execute();
      await deps.volumes.event(tx, v.project_id, v.id, back ? 'volume.failback' : 'volume.failover', null, null, requestId, {
        backend_id: p.backendId, from_cluster: p.cluster, to_cluster: p.cluster, replication_status: status, in_driver: true,
      });
    }
  });
  if (!back) await failUnreplicated(deps, p.cluster, requestId);
}
