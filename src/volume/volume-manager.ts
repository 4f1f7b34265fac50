/**
 * The volume manager: look-ups of volumes and snapshots for the caller (with
 * the row locks every request takes), the shared refusals (busy, frozen, no
 * room, cannot quiesce), and the API's entry points, each of which hands an
 * operation of the table (`operations/`) to the runtime, which checks and
 * changes the rows, takes quota and writes the job in one transaction.
 */
import type { Caller, Clock } from '../common/index.ts';
import type {
  Db, ProjectScope, ServiceRepository, TypeEncryptionRepository, SnapshotRepository, SnapshotRow, SnapshotRowStatus, VolumeRepository, VolumeRow, VolumeRowStatus, VolumeType, VolumeTypeRepository,
} from '../db/index.ts';
import { BasaltError, InvalidInputError, InvalidStatusError, NotFoundError } from '../errors/index.ts';
import type { KeyManager } from '../keymgr/index.ts';
import type { Enqueue, JobQueue, Tx } from '../jobs/index.ts';
import type { QuotaEngine } from '../quota/index.ts';
import { reportedPool, roomFor, unmetSpecs } from '../services/index.ts';
import { busyReason } from './lifecycle.ts';
import { exporterKey, isLocal, liveExporters, nbdAddress } from './connection-info.ts';
import { memberTarget, volumeTarget, type VolumeJobKinds } from './volume-jobs.ts';
import {
  OperationRuntime, snapshotCreate, snapshotDelete, volumeCreate, volumeDelete, volumeExtend, volumeMigrate, volumeRetype, volumeRevert,
  type Created, type CreateSnapshotInput, type CreateVolumeInput, type DeleteVolumeInput, type MigrateVolumeInput, type SnapshotStatus, type VolumeStatus,
} from './operations/index.ts';
import {
  snapshotManage, snapshotUnmanage, volumeManage, volumeUnmanage, type ManageSnapshotInput, type ManageVolumeInput,
} from './operations/index.ts';
import { refuseIfAttached, releaseVolumeReferences } from './volume-references.ts';

export { DELETABLE_STATUSES, SNAPSHOT_DELETABLE_STATUSES, type CreateSnapshotInput, type CreateVolumeInput } from './operations/index.ts';
export { isMultiattachType } from './volume-type-flags.ts';

/** What the manager needs. */
export interface VolumeManagerDeps {
  db: Db;
  quotas: QuotaEngine;
  queue: JobQueue;
  clock: Clock;
  volumes: VolumeRepository;
  snapshots: SnapshotRepository;
  kinds: VolumeJobKinds;
  types: VolumeTypeRepository;
  services: ServiceRepository;
  /** Encryption specs of types: a volume of an encrypted type gets a key from `keys`. */
  typeEncryption: TypeEncryptionRepository;
  keys: KeyManager;
  /** Reserves a backup for a volume created from it (3.47); absent where backups are not served. */
  backupSource?: { reserve(tx: Tx, caller: Caller, backupId: string, sizeGiB: number, volumeId: string): Promise<void> };
  /** `[DEFAULT] default_volume_type`, `default_availability_zone`, `allow_availability_zone_fallback`. */
  options: { defaultVolumeType: string; defaultZone: string; zoneFallback: boolean; serviceDownMs: number };
}

/** The scope a caller sees: own project, or everything for an admin asking for all. */
export function scopeOf(caller: Caller, allTenants = false): ProjectScope {
  return caller.isAdmin && allTenants ? 'all' : { projectId: caller.projectId };
}

/** The scope of single-resource look-ups: admins see every project's. */
function lookupScope(caller: Caller): ProjectScope {
  return caller.isAdmin ? 'all' : { projectId: caller.projectId };
}

/** API-side volume and snapshot operations. */
export class VolumeManager {
  private readonly runtime: OperationRuntime;

  constructor(private readonly deps: VolumeManagerDeps) {
    this.runtime = new OperationRuntime(deps, this);
  }

  /**
   * Finds a volume the caller may see.
   * @throws NotFoundError when there is none (also for malformed ids).
   */
  async get(caller: Caller, id: string, q: Tx = this.deps.db.kysely): Promise<VolumeRow> {
    const v = await this.deps.volumes.get(q, id, lookupScope(caller));
    if (!v) throw NotFoundError.of('Volume', id);
    return v;
  }

  /**
   * Locks a volume's row for the rest of `tx`, then reads it: every request
   * that checks a volume's state and changes it goes through here, so two such
   * requests on one volume run one after the other.
   * @throws NotFoundError.
   */
  async lockVolume(caller: Caller, id: string, tx: Tx): Promise<VolumeRow> {
    await this.deps.db.lockRows(tx, 'volumes', [id]);
    return this.get(caller, id, tx);
  }

  /**
   * Locks the row of a snapshot's volume (a snapshot's state changes only
   * under it), then reads the snapshot afresh.
   * @throws NotFoundError.
   */
  async lockSnapshot(caller: Caller, id: string, tx: Tx): Promise<SnapshotRow> {
    const s = await this.getSnapshot(caller, id, tx);
    await this.deps.db.lockRows(tx, 'volumes', [s.volume_id]);
    return this.getSnapshot(caller, id, tx);
  }

  /**
   * Finds a snapshot the caller may see.
   * @throws NotFoundError when there is none.
   */
  async getSnapshot(caller: Caller, id: string, q: Tx = this.deps.db.kysely): Promise<SnapshotRow> {
    const s = await this.deps.snapshots.get(q, id, lookupScope(caller));
    if (!s) throw NotFoundError.of('Snapshot', id);
    return s;
  }

  /**
   * The type a volume gets when none is asked for: the project's default
   * (3.62), else `default_volume_type`.
   * @throws BasaltError CONFIG_INVALID when the configured default type does not exist.
   */
  async defaultType(q: Tx, caller: Caller): Promise<VolumeType> {
    const { types, options } = this.deps;
    const own = await types.projectDefault(q, caller.projectId);
    const t = (own && await types.find(q, own, { isAdmin: true, projectId: caller.projectId }))
      ?? await types.find(q, options.defaultVolumeType, { isAdmin: true, projectId: caller.projectId });
    if (!t) {
      throw new BasaltError('CONFIG_INVALID', `The request cannot be fulfilled as the default volume type ${options.defaultVolumeType} cannot be found.`);
    }
    return t;
  }

  /**
   * The type a create asks for, by id or name, if the caller may use it.
   * @throws NotFoundError for an unknown or inaccessible type.
   */
  async resolveType(q: Tx, caller: Caller, requested: string | null): Promise<VolumeType> {
    if (requested === null || requested === '') return this.defaultType(q, caller);
    const t = await this.deps.types.find(q, requested, caller);
    if (!t) throw new NotFoundError(`Volume type with name ${requested} could not be found.`);
    return t;
  }

  /**
   * The zone a create gets: the one asked for if a volume service serves it,
   * else the default zone when fallback is allowed.
   * @throws InvalidInputError for an unknown zone without fallback.
   */
  async resolveZone(q: Tx, requested: string | null): Promise<string> {
    const { options, services } = this.deps;
    if (requested === null) return options.defaultZone;
    const zones = new Set([options.defaultZone, ...(await services.list(q)).filter((s) => s.binary === 'cinder-volume').map((s) => s.availability_zone)]);
    if (zones.has(requested)) return requested;
    if (options.zoneFallback) return options.defaultZone;
    throw new InvalidInputError(`Invalid input received: Availability zone '${requested}' is invalid.`);
  }

  /**
   * Readies a volume for removal inside the caller's transaction (its row
   * locked): refuses while a host is attached, then releases the rows that
   * refer to it (see `volume-references.ts`), so removing its row later cannot fail.
   * @throws InvalidStatusError when it is attached.
   */
  async releaseForRemoval(tx: Tx, enqueue: Enqueue, v: VolumeRow, requestId: string | null): Promise<void> {
    await refuseIfAttached(tx, v.id);
    await releaseVolumeReferences(this.deps, tx, enqueue, v, requestId);
  }

  /**
   * Records the volume in `creating` and queues its work, atomically (the
   * `volume.create` operation). A new empty volume goes to the scheduler; a
   * volume from a snapshot or a clone goes straight to the source's backend.
   * @throws NotFoundError (type, snapshot or source), InvalidInputError, InvalidStatusError, QuotaExceededError.
   */
  async requestCreate(caller: Caller, input: CreateVolumeInput): Promise<Created<'volume'>> {
    const { created } = await this.runtime.create(volumeCreate, caller, input);
    return created!;
  }

  /**
   * Moves a volume to `extending` and queues the driver work (`volume.extend`).
   * @throws NotFoundError, InvalidInputError (size not larger, no room), InvalidStatusError, QuotaExceededError.
   */
  async requestExtend(caller: Caller, id: string, newSizeGiB: number, opts: { inUseAllowed?: (tx: Tx, cluster: string) => Promise<boolean> } = {}): Promise<void> {
    await this.runtime.change(volumeExtend, caller, id, { newSizeGiB, ...opts });
  }

  /**
   * Moves the volume (and with `cascade` its snapshots) to `deleting` and
   * queues the driver work (`volume.delete`); a volume never placed on a
   * backend is removed at once. An admin's `force` deletes from any status.
   * @throws NotFoundError, InvalidStatusError (wrong status, attached, snapshots without cascade, busy).
   */
  async requestDelete(caller: Caller, id: string, opts: DeleteVolumeInput = {}): Promise<void> {
    await this.runtime.change(volumeDelete, caller, id, opts);
  }

  /**
   * Reverts an available volume to its latest snapshot (3.40, `volume.revert`).
   * @throws NotFoundError, InvalidInputError (not the latest, other volume, no backend support), InvalidStatusError.
   */
  async requestRevert(caller: Caller, id: string, snapshotId: string, backendCanRevert: (tx: Tx, cluster: string) => Promise<boolean>): Promise<void> {
    await this.runtime.change(volumeRevert, caller, id, { snapshotId, backendCanRevert });
  }

  /**
   * `os-retype` without migration (`volume.retype`): another type where the volume is, at once.
   * @throws NotFoundError, InvalidInputError (same type, pool does not fit, encryption differs, migration needed), InvalidStatusError, QuotaExceededError.
   */
  async requestRetype(caller: Caller, id: string, newType: string, migrationPolicy: 'never' | 'on-demand'): Promise<void> {
    const move = migrationPolicy === 'on-demand' ? await this.retypeMoves(caller, id, newType) : undefined;
    if (move) await this.runtime.change(volumeMigrate, caller, id, { newType: move });
    else await this.runtime.change(volumeRetype, caller, id, { newType, migrationPolicy });
  }

  /**
   * The new type when a retype must move the volume (its pool does not meet
   * the type, and nothing else refuses the retype), else undefined: the
   * in-place retype then decides, and refuses what it cannot do. Read outside
   * the request's transaction: whichever operation runs checks again under
   * the row's lock.
   */
  private async retypeMoves(caller: Caller, id: string, newType: string): Promise<VolumeType | undefined> {
    const q = this.deps.db.kysely;
    const v = await this.get(caller, id, q);
    const type = await this.deps.types.find(q, newType, caller);
    if (!type || type.id === v.volume_type_id || !v.host || !(await this.deps.typeEncryption.sameEncryption(q, v.volume_type_id, type.id))) return undefined;
    const reported = await reportedPool(q, v.host);
    return reported && unmetSpecs(reported.report, reported.pool, type.extra_specs).length === 0 ? undefined : type;
  }

  /**
   * An admin's `os-migrate_volume` (`volume.migrate`): copies an available
   * volume to another backend's pool and moves its row there.
   * @throws NotFoundError, InvalidInputError (unknown, same or unfit host, snapshots, group), InvalidStatusError (not available, migrating, busy).
   */
  async requestMigrate(caller: Caller, id: string, input: MigrateVolumeInput): Promise<void> {
    await this.runtime.change(volumeMigrate, caller, id, input);
  }

  /**
   * Records a snapshot in `creating` and queues it (`snapshot.create`).
   * @throws NotFoundError, InvalidStatusError, QuotaExceededError.
   */
  async requestSnapshot(caller: Caller, input: CreateSnapshotInput): Promise<SnapshotRow> {
    const { id, created } = await this.runtime.create(snapshotCreate, caller, input);
    // As inserted (`creating`, as Cinder answers), even if the job finished before the answer.
    return created?.row ?? (await this.deps.snapshots.get(this.deps.db.kysely, id))!;
  }

  /**
   * Moves a snapshot to `deleting` and queues the driver work (`snapshot.delete`);
   * an admin's `force` (os-force_delete) deletes from any status.
   * @throws NotFoundError, InvalidStatusError (wrong status, volumes being made from it).
   */
  async requestSnapshotDelete(caller: Caller, id: string, opts: { force?: boolean } = {}): Promise<void> {
    await this.runtime.change(snapshotDelete, caller, id, opts);
  }

  /**
   * Records a volume in `managing` on the backend the request names and
   * queues the adoption of its storage (`volume.manage`).
   * @throws NotFoundError (host, cluster, type), InvalidInputError (host and cluster, zone, disabled or frozen backend), QuotaExceededError.
   */
  async requestManage(caller: Caller, input: ManageVolumeInput): Promise<VolumeRow> {
    const { id } = await this.runtime.create(volumeManage, caller, input);
    return (await this.deps.volumes.get(this.deps.db.kysely, id))!;
  }

  /**
   * Moves a volume to `unmanaging` and queues its release (`volume.unmanage`): the row goes, the storage stays.
   * @throws NotFoundError, InvalidStatusError (status, attached, snapshots, group), InvalidInputError (encrypted).
   */
  async requestUnmanage(caller: Caller, id: string): Promise<void> {
    await this.runtime.change(volumeUnmanage, caller, id, undefined);
  }

  /**
   * Records a snapshot in `creating` and queues the adoption of its storage (`snapshot.manage`).
   * @throws NotFoundError (volume), InvalidStatusError, QuotaExceededError.
   */
  async requestSnapshotManage(caller: Caller, input: ManageSnapshotInput): Promise<SnapshotRow> {
    const { id } = await this.runtime.create(snapshotManage, caller, input);
    return (await this.deps.snapshots.get(this.deps.db.kysely, id))!;
  }

  /**
   * Moves a snapshot to `unmanaging` and queues its release (`snapshot.unmanage`).
   * @throws NotFoundError, InvalidStatusError (status, group snapshot, volumes being made from it).
   */
  async requestSnapshotUnmanage(caller: Caller, id: string): Promise<void> {
    await this.runtime.change(snapshotUnmanage, caller, id, undefined);
  }

  /**
   * An admin's `os-reset_status`: sets a volume's status (and attach status)
   * whatever it is now — the way out of a state only an operator can judge.
   * A job still running for the volume finds the status changed and stops.
   * @throws NotFoundError.
   */
  async resetStatus(caller: Caller, id: string, to: { status?: VolumeStatus; attachStatus?: string }): Promise<void> {
    await this.deps.queue.transaction(async (tx) => {
      const v = await this.lockVolume(caller, id, tx);
      await this.cas(tx, v.id, [v.status], to.status ?? v.status, caller, to.attachStatus ? { attach_status: to.attachStatus } : undefined);
    });
  }

  /**
   * An admin's snapshot `os-reset_status`.
   * @throws NotFoundError.
   */
  async resetSnapshotStatus(caller: Caller, id: string, status: SnapshotStatus): Promise<void> {
    await this.deps.queue.transaction(async (tx) => {
      const s = await this.lockSnapshot(caller, id, tx);
      if (!(await this.deps.snapshots.transition(tx, { id, from: [s.status], to: status, requestId: caller.requestId }))) {
        throw new InvalidStatusError(`Invalid snapshot: Snapshot ${id} status changed concurrently; try again.`);
      }
    });
  }

  /**
   * `os-update_snapshot_status`: a host that takes a snapshot itself reports
   * on it (status and progress); a `creating` snapshot may become available
   * or error, a `deleting` one error_deleting (Cinder's transitions).
   * @throws NotFoundError, InvalidInputError for any other transition.
   */
  async updateSnapshotStatus(caller: Caller, id: string, status: string, progress?: string): Promise<void> {
    const allowed: ReadonlyMap<string, readonly SnapshotRowStatus[]> = new Map([['creating', ['creating', 'available', 'error']], ['deleting', ['deleting', 'error_deleting']]]);
    await this.deps.queue.transaction(async (tx) => {
      const s = await this.lockSnapshot(caller, id, tx);
      const choices = allowed.get(s.status);
      if (!choices) throw new InvalidInputError(`Invalid input received: Snapshot status ${s.status} not allowed for update_snapshot_status.`);
      const to = choices.find((c) => c === status);
      if (!to) throw new InvalidInputError(`Invalid input received: Provided snapshot status ${status} not allowed for snapshot with status ${s.status}.`);
      await this.deps.snapshots.transition(tx, { id, from: [s.status], to, requestId: caller.requestId, ...(progress ? { set: { progress } } : {}) });
    });
  }

  /**
   * Where a snapshot is taken: an attached volume's on the member serving its
   * NBD export (that member quiesces the writes of its connections, so the
   * snapshot is crash-consistent), any other on any member of the cluster.
   */
  async snapshotTarget(tx: Tx, v: VolumeRow): Promise<string> {
    const live = await liveExporters(tx, this.deps.services, this.deps.options.serviceDownMs);
    for (const a of await tx.selectFrom('attachments').select('connection_info').where('volume_id', '=', v.id).execute()) {
      const address = nbdAddress(a.connection_info);
      const member = address === undefined ? undefined : live.get(exporterKey(v.cluster_name, address));
      if (member) return memberTarget(member.host);
    }
    return volumeTarget(v.cluster_name!);
  }


  /**
   * The scheduler's capacity filter for an extend: the volume's pool (as its
   * service last reported it) must hold `moreGiB` more. The service's placement key
   * serialises this with placements on the same pool.
   * @throws InvalidInputError naming the pool.
   */
  async refuseIfNoRoom(tx: Tx, v: VolumeRow, moreGiB: number): Promise<void> {
    const reported = v.host ? await reportedPool(tx, v.host) : undefined;
    if (!reported) return; // not reported yet: the driver's own check decides
    if (!(await roomFor(tx, this.deps, { serviceId: reported.service.id, host: v.host!, pool: reported.pool }, moreGiB))) {
      throw new InvalidInputError(`Invalid input received: Insufficient free space for volume extension: pool ${v.host} cannot hold ${moreGiB} GiB more.`);
    }
  }

  /**
   * Refuses a snapshot of an in-use volume whose writes cannot be quiesced:
   * a local attachment's loop device writes to the volume file without
   * passing the NBD export. A pool that snapshots by reflink still gives a
   * crash-consistent snapshot (the filesystem clones under the file's lock,
   * so each write lands wholly before or after it); a copy would mix in
   * writes made while it runs.
   * @throws InvalidInputError naming the ways out (detach, or attach over NBD).
   */
  async refuseIfUnquiescable(tx: Tx, v: VolumeRow): Promise<void> {
    const attachments = await tx.selectFrom('attachments').select('connection_info').where('volume_id', '=', v.id).execute();
    if (!attachments.some((a) => isLocal(a.connection_info))) return;
    // A pool not reported yet counts as copying: the safe guess.
    if (v.host && (await reportedPool(tx, v.host))?.pool.copy_method === 'reflink') return;
    throw new InvalidInputError(`Invalid input received: Volume ${v.id} is attached as a local loop device, whose writes cannot be held back, and its pool ${v.host ?? ''} snapshots by copying: detach it, or attach it over NBD, to snapshot it while in use.`);
  }

  /** @throws InvalidInputError when every service of the volume's backend is frozen (os-services freeze). */
  async refuseIfFrozen(tx: Tx, v: VolumeRow): Promise<void> {
    if (!v.cluster_name) return;
    const members = await tx.selectFrom('services').select('frozen').where('binary', '=', 'cinder-volume').where('cluster', '=', v.cluster_name).execute();
    if (members.length > 0 && members.every((m) => m.frozen === 1)) {
      throw new InvalidInputError(`Invalid input received: the backend of volume ${v.id} (${v.cluster_name}) is frozen; thaw it first.`);
    }
  }

  /** @throws InvalidStatusError when the volume is busy (see {@link busyReason}). */
  async refuseIfBusy(tx: Tx, volumeId: string, opts: { reading?: boolean } = {}): Promise<void> {
    const busy = await busyReason(this.deps, tx, volumeId, opts);
    if (busy) throw new InvalidStatusError(`Invalid volume: Volume ${volumeId} is busy: ${busy}.`);
  }

  private async cas(tx: Tx, id: string, from: readonly VolumeRowStatus[], to: VolumeRowStatus, caller: Caller, set?: Partial<VolumeRow>): Promise<void> {
    if (!(await this.deps.volumes.transition(tx, { id, from, to, requestId: caller.requestId, ...(set ? { set } : {}) }))) {
      throw new InvalidStatusError(`Invalid volume: Volume ${id} status changed concurrently; try again.`);
    }
  }
}
