/**
 * The API side of backups (Cinder's backup API): each request checks, takes
 * quota, changes the rows and queues its job in one transaction; the backup
 * service (`backup-service.ts`) does the work.
 *
 * - Create: from a volume `available` (or `in-use` with `force`: the job reads
 *   a temporary snapshot taken with the export's writes held), or from one of
 *   its `available` snapshots; `incremental` takes the backup of the volume
 *   with the latest data (older than the snapshot, for a backup of one) as its
 *   parent, which must be `available`. Takes `backups` and `backup_gigabytes`.
 *   The volume goes `backing-up` (a snapshot source `backing-up`).
 * - Delete: from `available` or `error` (any status with force); refused while
 *   an incremental backup names it as parent. The quota goes with the row.
 * - Restore: onto an `available` volume at least as large (`restoring-backup`
 *   meanwhile), or onto a new volume made for it (the request waits until it
 *   is made, as Cinder does).
 * - Reset status (admin): `available` or `error`, by compare-and-swap.
 * - Export and import of a backup record (admin): the record is the row as
 *   base64 JSON; an import makes a row (`creating`, quota taken) naming the
 *   same manifest, and a job checks the manifest is stored.
 */
import { isoAt, isUuid, newId, type Caller, type Clock } from '../common/index.ts';
import type { BackupRow, BackupRowRepository, Db, ProjectScope, ServiceRepository, SnapshotRepository, SnapshotRow, Tx, VolumeRepository, VolumeRow } from '../db/index.ts';
import { BasaltError, InvalidInputError, InvalidStatusError, NotFoundError } from '../errors/index.ts';
import type { JobQueue } from '../jobs/index.ts';
import type { QuotaEngine } from '../quota/index.ts';
import { ANY_BACKUP_TARGET, backupMemberTarget, backupTarget, backupTargetFor } from '../services/index.ts';
import type { VolumeManager } from '../volume/index.ts';
import { dataIdOf, type BackupJobKinds } from './backup-jobs.ts';

/** The backup driver name of records (Cinder's posix driver: clients check the `cinder.backup.drivers` prefix). */
export const POSIX_BACKUP_SERVICE = 'cinder.backup.drivers.posix.PosixBackupDriver';

/** An exported backup record (Cinder's `backup-record`). */
export interface BackupRecord { backup_service: string; backup_url: string }

/** The fields of a record's `backup_url` an import reads. */
const RECORD_FIELDS = ['id', 'volume_id', 'size'] as const;

/** What the manager needs. */
export interface BackupManagerDeps {
  db: Db;
  queue: JobQueue;
  clock: Clock;
  backups: BackupRowRepository;
  volumes: VolumeRepository;
  snapshots: SnapshotRepository;
  quotas: QuotaEngine;
  services: ServiceRepository;
  kinds: BackupJobKinds;
  /** Volume and snapshot look-ups and the shared refusals (busy, frozen, quiesce), and volume creates for restores. */
  volumeManager: VolumeManager;
  serviceDownMs: number;
  /** The zone backups are kept in (`storage_availability_zone` of the backup service). */
  availabilityZone: string;
  /** How long a restore to a new volume waits for it to be made. Default 120 s. */
  restoreVolumeWaitMs?: number;
}

/** A backup request after validation. */
export interface BackupRequest {
  volumeId: string;
  snapshotId: string | null;
  name: string | null;
  description: string | null;
  container: string | null;
  incremental: boolean;
  force: boolean;
  metadata: Record<string, string>;
  availabilityZone: string | null;
}

/** A restore request after validation. */
export interface RestoreBackupInput {
  /** The volume to write; null: a new one is made. */
  volumeId: string | null;
  /** The new volume's name (default `restore_backup_<id>`). */
  name: string | null;
}

/** What a restore request answers (Cinder's restore view). */
export interface RestoreAnswer { backup_id: string; volume_id: string; volume_name: string | null }

/** The statuses a backup may be deleted from without force. */
const DELETABLE = ['available', 'error'] as const;

/** API-side backup operations. */
export class BackupManager {
  constructor(private readonly deps: BackupManagerDeps) {}

  private scope(caller: Caller): ProjectScope {
    return caller.isAdmin ? 'all' : { projectId: caller.projectId };
  }

  /**
   * Finds a backup the caller may see.
   * @throws NotFoundError.
   */
  async get(caller: Caller, id: string, q: Tx = this.deps.db.kysely): Promise<BackupRow> {
    const b = await this.deps.backups.get(q, id, this.scope(caller));
    if (!b) throw NotFoundError.of('Backup', id);
    return b;
  }

  /**
   * Records a backup in `creating` and queues its job.
   * @throws NotFoundError (volume, snapshot), InvalidInputError, InvalidStatusError, QuotaExceededError,
   *   BasaltError BACKEND_UNAVAILABLE when no live backup service can read the volume.
   */
  async requestCreate(caller: Caller, input: BackupRequest): Promise<BackupRow> {
    const { backups, volumes, snapshots, quotas, clock, volumeManager: look } = this.deps;
    const id = newId();
    return this.deps.queue.transaction(async (tx, enqueue) => {
      const v = await look.lockVolume(caller, input.volumeId, tx);
      let snap: SnapshotRow | undefined;
      if (input.snapshotId) {
        snap = await look.getSnapshot(caller, input.snapshotId, tx);
        if (snap.volume_id !== v.id) throw new InvalidInputError(`Invalid volume: Volume ${v.id} does not match with snapshot.volume_id ${snap.volume_id}.`);
        if (snap.status !== 'available') throw new InvalidStatusError(`Invalid snapshot: Snapshot to be backed up must be available, but the current status is "${snap.status}".`);
      } else if (v.status !== 'available' && v.status !== 'in-use') {
        throw new InvalidStatusError(`Invalid volume: Volume to be backed up must be available or in-use, but the current status is "${v.status}".`);
      } else if (v.status === 'in-use' && !input.force) {
        throw new InvalidStatusError('Invalid volume: Backing up an in-use volume must use the force flag.');
      }
      if (!v.cluster_name) throw new InvalidStatusError(`Invalid volume: Volume ${v.id} was never placed on a backend.`);
      await look.refuseIfBusy(tx, v.id, { reading: true });
      const attached = !snap && v.attach_status === 'attached';
      if (attached) await look.refuseIfUnquiescable(tx, v);
      const target = attached ? backupTargetFor(await look.snapshotTarget(tx, v)) : backupTarget(v.cluster_name);
      await this.refuseIfNoService(tx, target);
      await quotas.consume(tx, caller.projectId, { backups: 1, backup_gigabytes: v.size });
      const parent = input.incremental ? await this.parentOf(tx, v, snap, caller) : undefined;
      const now = isoAt(clock.now());
      const row: BackupRow = {
        id, project_id: caller.projectId, user_id: caller.userId, volume_id: v.id, snapshot_id: snap?.id ?? null,
        name: input.name, description: input.description, status: 'creating', fail_reason: null, size: v.size, object_count: 0,
        container: input.container, parent_id: parent?.id ?? null, availability_zone: input.availabilityZone ?? this.deps.availabilityZone,
        data_timestamp: snap ? snap.created_at : now, service: null, host: null, restore_volume_id: null,
        service_metadata: null,
        volume_metadata: JSON.stringify(Object.fromEntries(Object.entries((await volumes.metadataOf(tx, [v.id])).get(v.id) ?? {}))),
        created_at: now, updated_at: null,
      };
      await backups.insert(tx, row, input.metadata);
      const held = snap
        ? await snapshots.transition(tx, { id: snap.id, from: ['available'], to: 'backing-up', requestId: caller.requestId })
        : await volumes.transition(tx, { id: v.id, from: [v.status], to: 'backing-up', requestId: caller.requestId });
      if (!held) throw new InvalidStatusError(`Invalid volume: Volume ${v.id} status changed concurrently; try again.`);
      await enqueue(this.deps.kinds.create, { target, resourceId: id, requestId: caller.requestId, payload: { backupId: id, tempSnapshotId: newId(), tempVolumeId: newId() } });
      return row;
    });
  }

  /**
   * The parent of an incremental backup: the backup of the volume with the
   * latest data (for a backup of a snapshot, the latest older than the snapshot).
   * @throws InvalidInputError when there is none, or it is not available.
   */
  private async parentOf(tx: Tx, v: VolumeRow, snap: SnapshotRow | undefined, caller: Caller): Promise<BackupRow> {
    const candidates = (await this.deps.backups.ofVolume(tx, v.id, caller.projectId))
      .filter((b) => !snap || (b.data_timestamp ?? b.created_at) < snap.created_at);
    if (candidates.length === 0) throw new InvalidInputError('Invalid backup: No backups available to do an incremental backup.');
    const latest = candidates[candidates.length - 1]!;
    if (latest.status !== 'available') throw new InvalidInputError('Invalid backup: The parent backup must be available for incremental backup.');
    if (latest.size > v.size) throw new InvalidInputError(`Invalid backup: The parent backup ${latest.id} is larger than the volume (${latest.size} GiB): take a full backup.`);
    return latest;
  }

  /**
   * Queues a backup's deletion.
   * @throws NotFoundError, InvalidStatusError (status), InvalidInputError (incremental backups depend on it).
   */
  async requestDelete(caller: Caller, id: string, opts: { force?: boolean } = {}): Promise<void> {
    await this.deps.queue.transaction(async (tx, enqueue) => {
      const b = await this.get(caller, id, tx);
      if (!opts.force && !(DELETABLE as readonly string[]).includes(b.status)) throw new InvalidStatusError('Invalid backup: Backup status must be available or error');
      if ((await this.deps.backups.withDependants(tx, [b.id])).size > 0) throw new InvalidInputError('Invalid backup: Incremental backups exist for this backup.');
      await this.refuseIfNoService(tx, ANY_BACKUP_TARGET);
      if (!(await this.deps.backups.transition(tx, { id: b.id, from: [b.status], to: 'deleting', requestId: caller.requestId }))) {
        throw new InvalidStatusError(`Invalid backup: Backup ${b.id} status changed concurrently; try again.`);
      }
      await enqueue(this.deps.kinds.delete, { target: ANY_BACKUP_TARGET, resourceId: b.id, requestId: caller.requestId, payload: { backupId: b.id } });
    });
  }

  /**
   * Queues a restore onto `input.volumeId`, or onto a new volume of the
   * backup's size (made first; the request waits for it).
   * @throws NotFoundError, InvalidStatusError, InvalidInputError (volume too small), QuotaExceededError (new volume).
   */
  async requestRestore(caller: Caller, id: string, input: RestoreBackupInput): Promise<RestoreAnswer> {
    const b = await this.get(caller, id);
    if (b.status !== 'available') throw new InvalidStatusError('Invalid backup: Backup status must be available');
    let volumeId = input.volumeId;
    const zeroed = volumeId === null;
    if (volumeId === null) {
      const created = await this.deps.volumeManager.requestCreate(caller, {
        sizeGiB: b.size, name: input.name ?? `restore_backup_${b.id}`, description: 'auto-created_from_restore_from_backup',
        metadata: {}, availabilityZone: null, volumeType: null,
      });
      volumeId = created.row.id;
      const made = await this.madeVolume(volumeId);
      if (made.status !== 'available') throw new InvalidStatusError(`Invalid volume: Error while creating volume ${volumeId} for restoring backup ${b.id}.`);
    }
    return this.deps.queue.transaction(async (tx, enqueue) => {
      const v = await this.deps.volumeManager.lockVolume(caller, volumeId, tx);
      const now = await this.get(caller, id, tx);
      if (now.status !== 'available') throw new InvalidStatusError('Invalid backup: Backup status must be available');
      if (v.status !== 'available') throw new InvalidStatusError('Invalid volume: Volume to be restored to must be available');
      if (b.size > v.size) throw new InvalidInputError(`Invalid volume: volume size ${v.size} is too small to restore backup of size ${b.size}.`);
      await this.deps.volumeManager.refuseIfBusy(tx, v.id);
      const target = backupTarget(v.cluster_name!);
      await this.refuseIfNoService(tx, target);
      if (!(await this.deps.backups.transition(tx, { id: b.id, from: ['available'], to: 'restoring', requestId: caller.requestId, set: { restore_volume_id: v.id } }))
        || !(await this.deps.volumes.transition(tx, { id: v.id, from: ['available'], to: 'restoring-backup', requestId: caller.requestId }))) {
        throw new InvalidStatusError(`Invalid backup: Backup ${b.id} or volume ${v.id} changed concurrently; try again.`);
      }
      await enqueue(this.deps.kinds.restore, { target, resourceId: b.id, requestId: caller.requestId, payload: { backupId: b.id, volumeId: v.id, zeroed } });
      return { backup_id: b.id, volume_id: v.id, volume_name: v.name };
    });
  }

  /** Waits for a volume made for a restore to leave `creating`. */
  private async madeVolume(volumeId: string): Promise<VolumeRow> {
    const deadline = Date.now() + (this.deps.restoreVolumeWaitMs ?? 120_000);
    for (;;) {
      const v = await this.deps.volumes.get(this.deps.db.kysely, volumeId);
      if (!v) throw NotFoundError.of('Volume', volumeId);
      if (v.status !== 'creating' || Date.now() > deadline) return v;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * An admin's `os-reset_status`: sets the backup's status by compare-and-swap.
   * A volume left `backing-up` by a create so ended is given back by the sweeper once no job reads it.
   * @throws NotFoundError, InvalidStatusError when it changed concurrently.
   */
  async resetStatus(caller: Caller, id: string, status: 'available' | 'error'): Promise<void> {
    await this.deps.queue.transaction(async (tx) => {
      const b = await this.get(caller, id, tx);
      if (!(await this.deps.backups.transition(tx, { id: b.id, from: [b.status], to: status, requestId: caller.requestId }))) {
        throw new InvalidStatusError(`Invalid backup: Backup ${b.id} status changed concurrently; try again.`);
      }
    });
  }

  /**
   * An available backup's record (admin): its row as base64 JSON.
   * @throws NotFoundError, InvalidStatusError.
   */
  async exportRecord(caller: Caller, id: string): Promise<BackupRecord> {
    const b = await this.get(caller, id);
    if (b.status !== 'available') throw new InvalidStatusError('Invalid backup: Backup status must be available and not restoring.');
    const record = {
      id: b.id, volume_id: b.volume_id, snapshot_id: b.snapshot_id, display_name: b.name, display_description: b.description, size: b.size,
      object_count: b.object_count, container: b.container, parent_id: b.parent_id, availability_zone: b.availability_zone,
      data_timestamp: b.data_timestamp, created_at: b.created_at, service_metadata: dataIdOf(b), volume_metadata: b.volume_metadata,
    };
    return { backup_service: POSIX_BACKUP_SERVICE, backup_url: Buffer.from(JSON.stringify(record)).toString('base64') };
  }

  /**
   * Makes a backup from an exported record (admin), in the caller's project:
   * `creating` until a backup service finds its manifest.
   * @throws InvalidInputError for another driver, a malformed record or an id that exists; QuotaExceededError.
   */
  async importRecord(caller: Caller, record: BackupRecord): Promise<BackupRow> {
    if (record.backup_service !== POSIX_BACKUP_SERVICE && record.backup_service !== 'posix') {
      throw new InvalidInputError(`Invalid backup: Backup service ${record.backup_service} is not this deployment's (${POSIX_BACKUP_SERVICE}).`);
    }
    let r: Record<string, unknown>;
    try {
      r = JSON.parse(Buffer.from(record.backup_url, 'base64').toString('utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new InvalidInputError('Invalid backup: backup_url is not an exported backup record.', { cause: err });
    }
    const text = (k: string): string | null => (typeof r[k] === 'string' ? r[k] as string : null);
    if (!r || typeof r !== 'object' || RECORD_FIELDS.some((k) => r[k] === undefined) || !isUuid(r.id) || typeof r.volume_id !== 'string'
      || !Number.isInteger(r.size) || (r.size as number) < 1) {
      throw new InvalidInputError('Invalid backup: backup_url is not an exported backup record (it needs id, volume_id and size).');
    }
    const id = r.id as string;
    return this.deps.queue.transaction(async (tx, enqueue) => {
      if (await this.deps.backups.get(tx, id)) throw new InvalidInputError(`Invalid backup: Backup ${id} already exists.`);
      await this.refuseIfNoService(tx, ANY_BACKUP_TARGET);
      await this.deps.quotas.consume(tx, caller.projectId, { backups: 1, backup_gigabytes: r.size as number });
      const parentId = text('parent_id');
      const now = isoAt(this.deps.clock.now());
      const row: BackupRow = {
        id, project_id: caller.projectId, user_id: caller.userId, volume_id: r.volume_id as string, snapshot_id: text('snapshot_id'),
        name: text('display_name'), description: text('display_description'), status: 'creating', fail_reason: null, size: r.size as number,
        object_count: Number.isInteger(r.object_count) ? r.object_count as number : 0, container: text('container'),
        parent_id: parentId && await this.deps.backups.get(tx, parentId) ? parentId : null,
        availability_zone: text('availability_zone') ?? this.deps.availabilityZone, data_timestamp: text('data_timestamp') ?? now,
        service: null, host: null, restore_volume_id: null, volume_metadata: text('volume_metadata'),
        service_metadata: text('service_metadata') ?? id, created_at: now, updated_at: null,
      };
      await this.deps.backups.insert(tx, row, {});
      await enqueue(this.deps.kinds.import, { target: ANY_BACKUP_TARGET, resourceId: id, requestId: caller.requestId, payload: { backupId: id } });
      return row;
    });
  }

  /**
   * Changes name, description (3.9) and metadata (3.43, replacing it).
   * @throws NotFoundError.
   */
  async update(caller: Caller, id: string, set: { name?: string | null; description?: string | null; metadata?: Record<string, string> }): Promise<BackupRow> {
    return this.deps.queue.transaction(async (tx) => {
      const b = await this.get(caller, id, tx);
      const { metadata, ...text } = set;
      if (Object.keys(text).length) await this.deps.backups.update(tx, b.id, text);
      if (metadata) await this.deps.backups.replaceMetadata(tx, b.id, metadata);
      return (await this.deps.backups.get(tx, b.id))!;
    });
  }

  /**
   * Refuses work no live backup service can run: a create or restore needs
   * one in a process serving the volume's cluster (or the member exporting it).
   * @throws BasaltError BACKEND_UNAVAILABLE (503), as Cinder answers when no backup service is up.
   */
  private async refuseIfNoService(tx: Tx, target: string): Promise<void> {
    const now = this.deps.clock.now();
    const live = (await this.deps.services.list(tx)).filter((s) => now - Number(s.heartbeat_ms) <= this.deps.serviceDownMs && s.disabled !== 1);
    const backupProcesses = new Set(live.filter((s) => s.binary === 'cinder-backup').map((s) => s.instance_id));
    const serves = (s: (typeof live)[number]) => s.binary === 'cinder-volume' && backupProcesses.has(s.instance_id)
      && (target === backupTarget(s.cluster ?? s.host) || target === backupMemberTarget(s.host));
    if (target === ANY_BACKUP_TARGET ? backupProcesses.size > 0 : live.some(serves)) return;
    throw new BasaltError('BACKEND_UNAVAILABLE', `Service cinder-backup could not be found: no live backup service runs ${target === ANY_BACKUP_TARGET ? '' : `in a process serving ${target.slice(target.indexOf(':') + 1)} `}(basalt server runs one beside every backend it serves).`);
  }
}
