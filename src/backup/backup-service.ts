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
 * earlier run left and stores only the blobs the target lacks; a restore
 * writes every block again; a delete of a backup without a manifest only
 * collects its leftovers.
 */
import type { Logger } from 'pino';
import { isoAt, type Clock } from '../common/index.ts';
import { withLock, type Coordinator } from '../coordination/index.ts';
import { bytesPerSecond, clearProgress, recordProgress, type BackupRow, type Db, type ServiceRepository, type VolumeRow } from '../db/index.ts';
import type { GuardedDriver, SnapshotRef, VolumeHandle } from '../drivers/index.ts';
import type { ChangedBlocksCut, ChangedBlockTracker } from '../export/index.ts';
import { BackupCorruptError, DriverError, InvalidInputError } from '../errors/index.ts';
import { RoleService, type JobHandler, type JobQueue } from '../jobs/index.ts';
import type { QuotaEngine } from '../quota/index.ts';
import { ANY_BACKUP_TARGET, backupMemberTarget, backupTarget } from '../services/index.ts';
import type { BackupProgress, BackupRepository, BackupSource, BackupStats, ByteRange } from './backup-repository.ts';
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
  /**
   * The process's export server: an attached volume's temporary snapshot is
   * taken with its writes held, and its changed-block tracker tells an
   * incremental backup what changed since its parent.
   */
  exports?: { quiesce<T>(key: string, fn: () => Promise<T>): Promise<T>; readonly changedBlocks?: ChangedBlockTracker | undefined };
  /** The service's host, recorded on the backups it runs. */
  host: string;
  /** Least milliseconds between two progress events of one backup or restore (`backup_timer_interval`). Default {@link PROGRESS_EVENT_MS}. */
  progressEventMs?: number;
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
      availabilityZone: o.availabilityZone, version: o.version, instanceId: o.instanceId, coordinator: o.coordinator, target: ANY_BACKUP_TARGET,
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

/** How often at most a running backup or restore records its progress in the database. */
const PROGRESS_RECORD_MS = 500;
/** A progress event is recorded each time the work passes another this many percent… */
const PROGRESS_EVENT_PERCENT = 5;
/** …but no more often than this by default (`backup_timer_interval`): at most 20 events per operation, and one each 2 s (`docs/events.md`). */
const PROGRESS_EVENT_MS = 2000;

/** What a backup or restore's progress says, as its events and `GET /backups/{id}/progress` carry it. */
function progressDetail(operation: string, p: BackupProgress, elapsedMs: number) {
  return {
    operation, percent: p.totalBytes ? Math.floor((p.doneBytes * 100) / p.totalBytes) : 100,
    done_bytes: p.doneBytes, total_bytes: p.totalBytes, bytes_per_second: bytesPerSecond(p.doneBytes, elapsedMs), elapsed_ms: elapsedMs,
  };
}

/**
 * Reports the progress of a backup or restore: logs it at most every 10%
 * (and at the end); records it (`progress`, read by `GET
 * /backups/{id}/progress`, the CLI and `/metrics`) at most every
 * {@link PROGRESS_RECORD_MS} and at the end; and records a `backup.progress`
 * (`backup.restore_progress`) event each {@link PROGRESS_EVENT_PERCENT}% at most
 * every `progressEventMs` (the end is the done event's). A failed write
 * is only logged: progress never fails the work.
 */
function progressReporter(deps: Pick<BackupHandlerDeps, 'db' | 'clock' | 'backups' | 'progressEventMs'>, log: Logger, operation: 'backup' | 'restore', b: BackupRow): {
  onProgress: (p: BackupProgress) => void;
  /** Resolves once every record asked for is written: before the job ends and clears it, or a late write would outlive it. */
  settled: () => Promise<void>;
  /** What the done event says: the bytes, the time taken and the rate. */
  doneDetail: () => ReturnType<typeof progressDetail>;
} {
  const startedAt = deps.clock.now();
  let last: BackupProgress = { doneBytes: 0, totalBytes: 0 };
  let nextPercent = 0;
  let nextRecord = 0;
  let nextEventPercent = PROGRESS_EVENT_PERCENT;
  const eventMs = deps.progressEventMs ?? PROGRESS_EVENT_MS;
  let nextEventAt = startedAt + eventMs;
  let recording: Promise<void> = Promise.resolve();
  // In order, one at a time: a late write must not replace a newer one.
  const write = (what: string, fn: () => Promise<void>): void => {
    recording = recording.then(fn).catch((err: unknown) => log.warn({ err, backup_id: b.id }, `recording ${what} failed`));
  };
  const onProgress = (p: BackupProgress): void => {
    last = p;
    const now = deps.clock.now();
    const detail = progressDetail(operation, p, now - startedAt);
    if (detail.percent >= nextPercent) {
      nextPercent = detail.percent + 10;
      log.info({ backup_id: b.id, percent: detail.percent, done_bytes: p.doneBytes, total_bytes: p.totalBytes, bytes_per_second: detail.bytes_per_second }, `${operation} progress`);
    }
    if (detail.percent >= nextEventPercent && detail.percent < 100 && now >= nextEventAt) {
      nextEventPercent = (Math.floor(detail.percent / PROGRESS_EVENT_PERCENT) + 1) * PROGRESS_EVENT_PERCENT;
      nextEventAt = now + eventMs;
      const event = operation === 'backup' ? 'backup.progress' : 'backup.restore_progress';
      write('a progress event', () => deps.backups.event(deps.db.kysely, b.project_id, b.id, event, null, null, null, detail));
    }
    if (now < nextRecord && p.doneBytes < p.totalBytes) return;
    nextRecord = now + PROGRESS_RECORD_MS;
    write('progress', () => recordProgress(deps.db.kysely, 'backup', b.id, {
      operation, doneBytes: p.doneBytes, totalBytes: p.totalBytes, updatedAt: isoAt(now), startedAt: isoAt(startedAt),
    }));
  };
  return { onProgress, settled: () => recording, doneDetail: () => progressDetail(operation, last, deps.clock.now() - startedAt) };
}

/**
 * What a backup reads: the volume itself when nothing writes it (not
 * attached: its `backing-up` status keeps hosts away), else a temporary
 * snapshot taken with the export's writes held; a snapshot through a
 * temporary volume made from it. Returns the handle and the clean-up.
 */
async function openSource(
  deps: BackupHandlerDeps, driver: GuardedDriver, b: BackupRow, v: VolumeRow, p: BackupCreatePayload, tracker: ChangedBlockTracker | undefined,
): Promise<BackupOrigin> {
  const temp = { id: p.tempVolumeId, sizeGiB: b.size };
  const tempSnap = { id: p.tempSnapshotId, volumeId: v.id, sizeGiB: v.size };
  // What an earlier run left goes first: its copies may be of an earlier instant.
  await driver.deleteVolume(temp);
  await driver.deleteSnapshot(tempSnap);
  if (!b.snapshot_id && v.attach_status !== 'attached') {
    // Nothing writes the volume (backing-up keeps hosts away): now is the backup's point in time.
    const cut = await tracker?.cut(v.id, b.id);
    try {
      const handle = await driver.openVolume({ id: v.id, sizeGiB: v.size });
      return { handle, cut, done: () => handle.close() };
    } catch (err) {
      await cut?.abort();
      throw err;
    }
  }
  let removeSnapshot = false;
  let cut: ChangedBlocksCut | undefined;
  let snap: SnapshotRef;
  try {
    if (b.snapshot_id) {
      // The snapshot's point in time is not now: the tracker's bits say nothing of it, and stay.
      const s = await deps.snapshots.get(deps.db.kysely, b.snapshot_id);
      if (!s) throw new InvalidInputError(`Invalid input received: snapshot ${b.snapshot_id} of backup ${b.id} no longer exists.`);
      snap = { id: s.id, volumeId: s.volume_id, sizeGiB: s.volume_size };
      await driver.createVolumeFromSnapshot(temp, snap);
    } else {
      // Crash-consistent: the snapshot is taken with the export's writes held, and read at leisure;
      // the changed blocks are cut at the same instant, while no write is in flight.
      const take = async (): Promise<void> => {
        await driver.createSnapshot(tempSnap);
        cut = await tracker?.cut(v.id, b.id);
      };
      if (deps.exports) {
        // What is cached goes out first, while the writes still flow: the snapshot then holds them briefly.
        await driver.flushAhead([{ id: v.id, sizeGiB: v.size }]);
        await deps.exports.quiesce(v.id, take);
      } else {
        await take();
      }
      removeSnapshot = true;
      snap = tempSnap;
      await driver.createVolumeFromSnapshot(temp, tempSnap);
    }
  } catch (err) {
    await cut?.abort();
    throw err;
  }
  const handle = await driver.openVolume(temp).catch(async (err: unknown) => {
    await cut?.abort();
    throw err;
  });
  return {
    handle,
    cut,
    snapshot: snap,
    async done() {
      await handle.close();
      await driver.deleteVolume(temp);
      if (removeSnapshot) await driver.deleteSnapshot(tempSnap);
    },
  };
}

/** What a backup reads, and what it knows of the changes since its parent. */
interface BackupOrigin {
  handle: VolumeHandle;
  /** The changed blocks cut at the backup's point in time (the volume's own, read now or through a temporary snapshot). */
  cut?: ChangedBlocksCut | undefined;
  /** The snapshot read (the backed-up snapshot, or the temporary one); undefined when the volume itself is read. */
  snapshot?: SnapshotRef;
  done(): Promise<void>;
}

/**
 * Whether the tracker of this process saw every write of the volume since
 * its last backup here: every volume service of the volume's cluster runs in
 * this process (a member elsewhere may have served writes this tracker never
 * saw), and no attachment writes it without the NBD export (a loop device, a
 * backend's own protocol), nor did one that is being fenced. When not, the
 * volume is marked wholly changed before the cut, so this backup reads it all.
 */
async function untrackedWriters(deps: BackupHandlerDeps, v: VolumeRow): Promise<string | undefined> {
  const served = new Set([...deps.backends.values()].map((b) => b.serviceHost));
  const members = await deps.db.kysely.selectFrom('services').select('host').where('binary', '=', 'cinder-volume').where('cluster', '=', v.cluster_name ?? '').execute();
  if (members.some((m) => !served.has(m.host))) return 'another member of its cluster may have served its writes';
  const attachments = await deps.db.kysely.selectFrom('attachments').select('connection_info').where('volume_id', '=', v.id).execute();
  if (attachments.some((a) => a.connection_info !== null && (JSON.parse(a.connection_info) as { driver_volume_type?: string }).driver_volume_type !== 'nbd')) {
    return 'an attachment writes it without the NBD export';
  }
  const fencing = await deps.db.kysely.selectFrom('jobs').select('id').where('kind', '=', 'export.fence').where('resource_id', '=', v.id)
    .where('state', 'in', ['queued', 'running']).executeTakeFirst();
  if (fencing) return 'a detached attachment is still being fenced';
  return undefined;
}

/**
 * The ranges an incremental backup must read: the tracker's when its bits
 * start at the parent, else the driver's changed extents between the
 * parent's snapshot (a backup of a snapshot that still exists) and what this
 * backup reads; undefined (everything changed) when neither knows.
 */
async function changedRanges(deps: BackupHandlerDeps, driver: GuardedDriver, v: VolumeRow, parent: BackupRow, origin: BackupOrigin, log: Logger): Promise<ByteRange[] | undefined> {
  const tracked = origin.cut?.changedSince(parent.id);
  if (tracked) return tracked;
  if (!driver.capabilities.supportsChangedExtents || !parent.snapshot_id) return undefined;
  const s = await deps.snapshots.get(deps.db.kysely, parent.snapshot_id);
  if (!s || s.volume_id !== v.id) return undefined;
  try {
    return await driver.changedExtents({ id: v.id, sizeGiB: v.size }, { id: s.id, volumeId: s.volume_id, sizeGiB: s.volume_size }, origin.snapshot);
  } catch (err) {
    log.warn({ err, volume_id: v.id }, 'the driver could not tell the changed extents: the backup reads everything');
    return undefined;
  }
}

/** Builds the handlers of the backup jobs. */
export function backupHandlers(deps: BackupHandlerDeps): JobHandler<any>[] { // eslint-disable-line @typescript-eslint/no-explicit-any
  const { db, backups, volumes, repository, kinds } = deps;
  const locked = <T>(name: string, fn: (lost: AbortSignal) => Promise<T>): Promise<T> => withLock(deps.coordinator, name, deps.lockTimeoutMs, fn);
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
      let done: Record<string, unknown> | undefined;
      await locked(`volume-${v.id}`, (volumeLost) => locked(`backup-volume-${v.id}`, async (backupLost) => {
        const now = await backups.get(db.kysely, b.id);
        if (now?.status !== 'creating') return; // force-deleted or reset meanwhile
        const parentRow = b.parent_id ? await backups.get(db.kysely, b.parent_id) : undefined;
        const parent = parentRow ? await repository.manifest(v.id, dataIdOf(parentRow)) : undefined;
        if (b.parent_id && !parent) throw new BackupCorruptError(`Backup ${b.parent_id}, the parent of incremental backup ${b.id}, has no manifest on ${repository.target.location}`);
        const tracker = b.snapshot_id ? undefined : deps.exports?.changedBlocks;
        const untracked = tracker ? await untrackedWriters(deps, v) : undefined;
        if (tracker && untracked) await tracker.markAllChanged(v.id, untracked);
        const source = await openSource(deps, driver, b, v, p, tracker);
        let stored = false;
        let changed: ByteRange[] | undefined;
        try {
          try {
            changed = parentRow && parent ? await changedRanges(deps, driver, v, parentRow, source, ctx.log) : undefined;
            const read: BackupSource = source.handle;
            const progress = progressReporter(deps, ctx.log, 'backup', b);
            try {
              stats = await repository.create({
                volumeId: v.id, backupId: b.id, source: read, ...(parent ? { parent } : {}), ...(changed ? { changed } : {}), createdAt: b.created_at,
                // A lost lock stops the backup at its next read (withLock has the job run again).
                onProgress: (x) => { volumeLost.throwIfAborted(); backupLost.throwIfAborted(); progress.onProgress(x); },
              });
            } finally {
              await progress.settled();
            }
            done = progress.doneDetail();
            stored = true;
          } finally {
            await source.done();
          }
        } finally {
          // A failed backup gives its changed blocks back: the next one must still read them.
          if (stored) await source.cut?.commit();
          else await source.cut?.abort();
        }
        ctx.log.info({
          backup_id: b.id, volume_id: v.id, bytes_read: stats.bytesRead, blobs_stored: stats.blobsStored, packs_stored: stats.packsStored, bytes_stored: stats.bytesStored, blobs_reused: stats.blobsReused,
          changed_bytes: changed ? changed.reduce((n, r) => n + r.length, 0) : null,
        }, 'backup stored');
      }));
      await ctx.complete(async (tx) => {
        // Without stats the backup was force-deleted or reset meanwhile: only its source is given back.
        if (stats && await backups.transition(tx, { id: b.id, from: ['creating'], to: 'available', requestId: ctx.job.request_id, set: { ...set, object_count: stats.objectsStored, fail_reason: null } })) {
          await backups.event(tx, b.project_id, b.id, 'backup.done', null, null, ctx.job.request_id, {
            ...done, volume_id: b.volume_id, snapshot_id: b.snapshot_id, incremental: b.parent_id !== null,
            bytes_read: stats.bytesRead, bytes_stored: stats.bytesStored, blobs_reused: stats.blobsReused,
          });
        }
        await clearProgress(tx, b.id);
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
      let done: Record<string, unknown> | undefined;
      await locked(`volume-${v.id}`, async (lost) => {
        const manifest = await repository.manifest(b.volume_id, dataIdOf(b));
        if (!manifest) throw new BackupCorruptError(`Backup ${b.id}: its manifest is missing from ${repository.target.location}`);
        // The restore writes past the export's tracker: the next incremental backup reads the volume whole.
        await deps.exports?.changedBlocks?.markAllChanged(v.id, `restore of backup ${b.id}`);
        const handle = await driver.openVolume({ id: v.id, sizeGiB: v.size });
        const progress = progressReporter(deps, ctx.log, 'restore', b);
        try {
          // A lost lock stops the restore at its next write (withLock has the job run again).
          const r = await repository.restore(manifest, handle, { zeroed: p.zeroed, onProgress: (x) => { lost.throwIfAborted(); progress.onProgress(x); } });
          ctx.log.info({ backup_id: b.id, volume_id: v.id, bytes_written: r.bytesWritten }, 'backup restored');
          done = { ...progress.doneDetail(), volume_id: v.id, bytes_written: r.bytesWritten };
        } finally {
          await progress.settled();
          await handle.close();
        }
      });
      await ctx.complete(async (tx) => {
        if (await backups.transition(tx, { id: b.id, from: ['restoring'], to: 'available', requestId: ctx.job.request_id, set: { restore_volume_id: null, host: deps.host } })) {
          await backups.event(tx, b.project_id, b.id, 'backup.restore_done', null, null, ctx.job.request_id, done);
        }
        await clearProgress(tx, b.id);
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
        ctx.log.info({ backup_id: b.id, packs_removed: r.packsRemoved }, 'backup deleted');
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
