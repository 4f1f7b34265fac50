/**
 * The backup service: the `backup` role (Cinder's `cinder-backup`), a
 * {@link RoleService} whose handlers run the backup jobs (`backup-jobs.ts`)
 * against one backup repository.
 *
 * Where it runs: a backup reads a volume, and a restore writes one, through
 * the drivers of the process the service runs in (as a migration's copy
 * does). So the service takes `backup:<cluster>` jobs only for the clusters
 * its process serves, `backup-member:<host@backend>` jobs for its process's
 * volume services (a backup of an attached volume quiesces that member's
 * export), and `backup` jobs (deletes, which touch no volume) from anyone.
 * The API refuses a backup or restore that no live backup service can run
 * (503, as Cinder answers when no backup service is up). `basalt server` runs
 * it beside every backend it serves; `--roles backup` alone only deletes.
 *
 * Handlers are idempotent: a create run again removes the temporary copies an
 * earlier run left and stores only the chunks the target lacks; a restore
 * writes every chunk again; a delete of a backup without a manifest only
 * collects its leftovers.
 */
import type { Logger } from 'pino';
import type { Clock } from '../common/index.ts';
import { withLock, type Coordinator } from '../coordination/index.ts';
import type { BackupRow, Db, ServiceRepository, VolumeRow } from '../db/index.ts';
import type { GuardedDriver, VolumeHandle } from '../drivers/index.ts';
import { BackupCorruptError, DriverError, InvalidInputError } from '../errors/index.ts';
import { RoleService, type JobHandler, type JobQueue } from '../jobs/index.ts';
import type { QuotaEngine } from '../quota/index.ts';
import { ANY_BACKUP_TARGET, backupMemberTarget, backupTarget } from '../services/index.ts';
import type { BackupProgress, BackupRepository, BackupSource, BackupStats } from './backup-repository.ts';
import {
  dataIdOf, releaseSource, type BackupCreatePayload, type BackupDeletePayload, type BackupImportPayload, type BackupJobDeps, type BackupJobKinds, type BackupRestorePayload,
} from './backup-jobs.ts';

/** A volume service of this process whose volumes the backup service reads and writes. */
export interface ServedBackend {
  /** `host@backend`. */
  serviceHost: string;
  cluster: string;
  driver: GuardedDriver;
}

/** What the handlers need. */
export interface BackupHandlerDeps extends BackupJobDeps {
  db: Db;
  clock: Clock;
  quotas: QuotaEngine;
  kinds: BackupJobKinds;
  repository: BackupRepository;
  coordinator: Coordinator;
  lockTimeoutMs: number;
  /** The backends of this process, by cluster. */
  backends: ReadonlyMap<string, ServedBackend>;
  /** The process's export server: an attached volume's temporary snapshot is taken with its writes held. */
  exports?: { quiesce<T>(key: string, fn: () => Promise<T>): Promise<T> };
  /** The service's host, recorded on the backups it runs. */
  host: string;
  log: Logger;
}

/** Settings of a {@link BackupService}. */
export interface BackupServiceOptions extends BackupHandlerDeps {
  queue: JobQueue;
  services: ServiceRepository;
  version: string;
  instanceId: string;
  availabilityZone: string;
  concurrency: number;
  pollMs: number;
  heartbeatMs: number;
}

/** The backup role of one process. */
export class BackupService {
  private readonly role: RoleService;

  constructor(o: BackupServiceOptions) {
    const backends = [...o.backends.values()];
    this.role = new RoleService({
      queue: o.queue, services: o.services, host: o.host, binary: 'cinder-backup', backend: null, cluster: null,
      availabilityZone: o.availabilityZone, version: o.version, instanceId: o.instanceId, target: ANY_BACKUP_TARGET,
      extraTargets: [...backends.map((b) => backupTarget(b.cluster)), ...backends.map((b) => backupMemberTarget(b.serviceHost))],
      handlers: backupHandlers(o), concurrency: o.concurrency, pollMs: o.pollMs, heartbeatMs: o.heartbeatMs,
      log: o.log,
    });
  }

  async start(): Promise<void> {
    await this.role.start();
  }

  async stop(): Promise<void> {
    await this.role.stop();
  }
}

/** The driver of a volume's backend in this process. @throws DriverError when this process does not serve it. */
function driverOf(deps: BackupHandlerDeps, v: VolumeRow): GuardedDriver {
  const b = v.cluster_name ? deps.backends.get(v.cluster_name) : undefined;
  if (!b) throw new DriverError(`Volume ${v.id}'s backend ${v.cluster_name ?? '(none)'} is not served by the process of backup service ${deps.host}.`);
  return b.driver;
}

/** Logs progress at most every 10% (and at the end). */
function progressLogger(log: Logger, what: string, id: string): (p: BackupProgress) => void {
  let next = 0;
  return (p) => {
    const percent = p.totalBytes ? Math.floor((p.doneBytes * 100) / p.totalBytes) : 100;
    if (percent < next) return;
    next = percent + 10;
    log.info({ backup_id: id, percent, done_bytes: p.doneBytes, total_bytes: p.totalBytes }, `${what} progress`);
  };
}

/**
 * What a backup reads: the volume itself when nothing writes it (not
 * attached: its `backing-up` status keeps hosts away), else a temporary
 * snapshot taken with the export's writes held; a snapshot through a
 * temporary volume made from it. Returns the handle and the clean-up.
 */
async function openSource(deps: BackupHandlerDeps, driver: GuardedDriver, b: BackupRow, v: VolumeRow, p: BackupCreatePayload): Promise<{ handle: VolumeHandle; done(): Promise<void> }> {
  const temp = { id: p.tempVolumeId, sizeGiB: b.size };
  const tempSnap = { id: p.tempSnapshotId, volumeId: v.id, sizeGiB: v.size };
  // What an earlier run left goes first: its copies may be of an earlier instant.
  await driver.deleteVolume(temp);
  await driver.deleteSnapshot(tempSnap);
  if (!b.snapshot_id && v.attach_status !== 'attached') {
    const handle = await driver.openVolume({ id: v.id, sizeGiB: v.size });
    return { handle, done: () => handle.close() };
  }
  let removeSnapshot = false;
  if (b.snapshot_id) {
    const s = await deps.snapshots.get(deps.db.kysely, b.snapshot_id);
    if (!s) throw new InvalidInputError(`Invalid input received: snapshot ${b.snapshot_id} of backup ${b.id} no longer exists.`);
    await driver.createVolumeFromSnapshot(temp, { id: s.id, volumeId: s.volume_id, sizeGiB: s.volume_size });
  } else {
    // Crash-consistent: the snapshot is taken with the export's writes held, and read at leisure.
    const take = () => driver.createSnapshot(tempSnap);
    if (deps.exports) await deps.exports.quiesce(v.id, take);
    else await take();
    removeSnapshot = true;
    await driver.createVolumeFromSnapshot(temp, tempSnap);
  }
  const handle = await driver.openVolume(temp);
  return {
    handle,
    async done() {
      await handle.close();
      await driver.deleteVolume(temp);
      if (removeSnapshot) await driver.deleteSnapshot(tempSnap);
    },
  };
}

/** Builds the handlers of the backup jobs. */
export function backupHandlers(deps: BackupHandlerDeps): JobHandler<any>[] { // eslint-disable-line @typescript-eslint/no-explicit-any
  const { db, backups, volumes, repository, kinds } = deps;
  const locked = <T>(name: string, fn: () => Promise<T>): Promise<T> => withLock(deps.coordinator, name, deps.lockTimeoutMs, fn);
  const set = { service: repository.target.kind, host: deps.host };

  const create: JobHandler<BackupCreatePayload> = {
    kind: kinds.create,
    async run(ctx, p) {
      const b = await backups.get(db.kysely, p.backupId);
      if (!b) return ctx.complete(); // force-deleted: the sweeper gives its volume back once no job works on it
      // Force-deleted or reset before it ran: only its source is given back.
      if (b.status !== 'creating') return ctx.complete((tx) => releaseSource(deps, tx, b, ctx.job.request_id));
      const v = await volumes.get(db.kysely, b.volume_id);
      if (!v) throw new InvalidInputError(`Invalid input received: volume ${b.volume_id} of backup ${b.id} no longer exists.`);
      const driver = driverOf(deps, v);
      let stats: BackupStats | undefined;
      await locked(`volume-${v.id}`, () => locked(`backup-volume-${v.id}`, async () => {
        const now = await backups.get(db.kysely, b.id);
        if (now?.status !== 'creating') return; // force-deleted or reset meanwhile
        const parentRow = b.parent_id ? await backups.get(db.kysely, b.parent_id) : undefined;
        const parent = parentRow ? await repository.manifest(v.id, dataIdOf(parentRow)) : undefined;
        if (b.parent_id && !parent) throw new BackupCorruptError(`Backup ${b.parent_id}, the parent of incremental backup ${b.id}, has no manifest on ${repository.target.location}`);
        const source = await openSource(deps, driver, b, v, p);
        try {
          const read: BackupSource = source.handle;
          stats = await repository.create({
            volumeId: v.id, backupId: b.id, source: read, ...(parent ? { parent } : {}), createdAt: b.created_at,
            onProgress: progressLogger(ctx.log, 'backup', b.id),
          });
        } finally {
          await source.done();
        }
        ctx.log.info({ backup_id: b.id, bytes_read: stats.bytesRead, chunks_stored: stats.chunksStored, bytes_stored: stats.bytesStored, chunks_reused: stats.chunksReused }, 'backup stored');
      }));
      await ctx.complete(async (tx) => {
        // Without stats the backup was force-deleted or reset meanwhile: only its source is given back.
        if (stats) await backups.transition(tx, { id: b.id, from: ['creating'], to: 'available', requestId: ctx.job.request_id, set: { ...set, object_count: stats.chunksStored + 1, fail_reason: null } });
        await releaseSource(deps, tx, b, ctx.job.request_id);
      });
    },
  };

  const restore: JobHandler<BackupRestorePayload> = {
    kind: kinds.restore,
    async run(ctx, p) {
      const b = await backups.get(db.kysely, p.backupId);
      if (b?.status !== 'restoring') return ctx.complete();
      const v = await volumes.get(db.kysely, p.volumeId);
      if (v?.status !== 'restoring-backup') throw new InvalidInputError(`Invalid input received: volume ${p.volumeId} is no longer waiting for the restore of backup ${b.id}.`);
      const driver = driverOf(deps, v);
      await locked(`volume-${v.id}`, async () => {
        const manifest = await repository.manifest(b.volume_id, dataIdOf(b));
        if (!manifest) throw new BackupCorruptError(`Backup ${b.id}: its manifest is missing from ${repository.target.location}`);
        const handle = await driver.openVolume({ id: v.id, sizeGiB: v.size });
        try {
          const r = await repository.restore(manifest, handle, { zeroed: p.zeroed, onProgress: progressLogger(ctx.log, 'restore', b.id) });
          ctx.log.info({ backup_id: b.id, volume_id: v.id, bytes_written: r.bytesWritten }, 'backup restored');
        } finally {
          await handle.close();
        }
      });
      await ctx.complete(async (tx) => {
        await backups.transition(tx, { id: b.id, from: ['restoring'], to: 'available', requestId: ctx.job.request_id, set: { restore_volume_id: null, host: deps.host } });
        if (await volumes.transition(tx, { id: v.id, from: ['restoring-backup'], to: 'available', requestId: ctx.job.request_id })) {
          // The metadata the volume had when it was backed up comes back with its data, as Cinder's restores do.
          await volumes.addMetadata(tx, v.id, b.volume_metadata ? JSON.parse(b.volume_metadata) as Record<string, string> : {});
        }
      });
    },
  };

  const remove: JobHandler<BackupDeletePayload> = {
    kind: kinds.delete,
    async run(ctx, p) {
      const b = await backups.get(db.kysely, p.backupId);
      if (b?.status !== 'deleting') return ctx.complete();
      await locked(`backup-volume-${b.volume_id}`, async () => {
        // A manifest another row names too (an imported record of this backup) stays for it.
        const sharing = await db.kysely.selectFrom('backups').select('id').where('id', '!=', b.id)
          .where((eb) => eb.or([eb('service_metadata', '=', dataIdOf(b)), eb('id', '=', dataIdOf(b))])).executeTakeFirst();
        if (sharing) return;
        const r = await repository.delete(b.volume_id, dataIdOf(b));
        ctx.log.info({ backup_id: b.id, chunks_removed: r.chunksRemoved }, 'backup deleted');
      });
      await ctx.complete(async (tx) => {
        if (await backups.deleteRow(tx, b.id, 'deleting', ctx.job.request_id)) {
          await deps.quotas.release(tx, b.project_id, { backups: 1, backup_gigabytes: b.size });
        }
      });
    },
  };

  const imported: JobHandler<BackupImportPayload> = {
    kind: kinds.import,
    async run(ctx, p) {
      const b = await backups.get(db.kysely, p.backupId);
      if (b?.status !== 'creating') return ctx.complete();
      const manifest = await repository.manifest(b.volume_id, dataIdOf(b));
      if (!manifest) throw new BackupCorruptError(`Backup ${b.id}: the manifest its record names (${dataIdOf(b)}) is missing from ${repository.target.location}`);
      await ctx.complete(async (tx) => {
        await backups.transition(tx, { id: b.id, from: ['creating'], to: 'available', requestId: ctx.job.request_id, set: { ...set, fail_reason: null } });
      });
    },
  };

  return [create, restore, remove, imported];
}
