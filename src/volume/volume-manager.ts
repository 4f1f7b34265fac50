/**
 * The volume manager owns every status transition of volumes and snapshots.
 * The API calls its `request*` methods, which check and change rows with
 * compare-and-swap updates, take quota, and write the job, all in one
 * transaction; the volume service runs the handlers (`volume-handlers.ts`),
 * which call the driver and finish the transition.
 */
import type { Caller, Clock } from '../common/index.ts';
import { isoAt, newId } from '../common/index.ts';
import type {
  Db, ProjectScope, ServiceRepository, TypeEncryptionRepository, SnapshotRepository, SnapshotRow, VolumeRepository, VolumeRow, VolumeType, VolumeTypeRepository,
} from '../db/index.ts';
import { BasaltError, InvalidInputError, InvalidStatusError, NotFoundError } from '../errors/index.ts';
import type { KeyManager } from '../keymgr/index.ts';
import type { Enqueue, JobQueue, Tx } from '../jobs/index.ts';
import type { QuotaEngine } from '../quota/index.ts';
import { fits, reportedPool, unmetSpecs } from '../services/index.ts';
import { busyReason, removeVolume } from './lifecycle.ts';
import { snapshotQuota, typeNameOf, volumeQuota } from './volume-quota.ts';
import { keyForNewVolume, type CopySource } from './volume-encryption.ts';
import { exporterKey, isLocal, liveExporters, nbdAddress } from './connection-info.ts';
import { memberTarget, volumeTarget, type VolumeJobKinds } from './volume-jobs.ts';
import { checkNewMember } from './group-membership.ts';
import { refuseIfAttached, releaseVolumeReferences } from './volume-references.ts';

/** Statuses from which a volume may be deleted without `force` (Cinder's list). */
export const DELETABLE_STATUSES = ['available', 'error', 'error_restoring', 'error_extending', 'error_managing'] as const;
/** Statuses from which a snapshot may be deleted. */
export const SNAPSHOT_DELETABLE_STATUSES = ['available', 'error', 'error_deleting'] as const;

/** A create request after validation. */
export interface CreateVolumeInput {
  sizeGiB: number;
  name: string | null;
  description: string | null;
  metadata: Record<string, string>;
  /** The zone asked for; null means the default zone (or the source's, for copies). */
  availabilityZone: string | null;
  /** Type name or id; null means the project's (or the configured) default type, or the source's. */
  volumeType: string | null;
  /** Make the volume from this snapshot. */
  snapshotId?: string | null;
  /** Make the volume a clone of this volume. */
  sourceVolumeId?: string | null;
  /** Put the volume in this group (3.13); checked by the `checkGroup` hook of {@link VolumeManager.requestCreate}. */
  groupId?: string | null;
}

/** A snapshot request after validation. */
export interface CreateSnapshotInput {
  volumeId: string;
  force: boolean;
  name: string | null;
  description: string | null;
  metadata: Record<string, string>;
}

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
  /** `[DEFAULT] default_volume_type`, `default_availability_zone`, `allow_availability_zone_fallback`. */
  options: { defaultVolumeType: string; defaultZone: string; zoneFallback: boolean; serviceDownMs: number };
}

/** Whether a type makes its volumes multiattach (`multiattach="<is> True"`, 3.50). */
export function isMultiattachType(t: VolumeType): boolean {
  return /^<is>\s+true$/i.test((t.extra_specs.multiattach ?? '').trim());
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
  constructor(private readonly deps: VolumeManagerDeps) {}

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
   * Records the volume in `creating` and queues its work, atomically. A new
   * empty volume goes to the scheduler; a volume from a snapshot or a clone
   * goes straight to the source's backend (the data is there).
   * @throws NotFoundError (type, snapshot or source), InvalidInputError, InvalidStatusError, QuotaExceededError.
   */
  async requestCreate(caller: Caller, input: CreateVolumeInput): Promise<VolumeRow> {
    const { queue, volumes, kinds, clock } = this.deps;
    const id = newId();
    await queue.transaction(async (tx, enqueue) => {
      const source = await this.copySource(tx, caller, input);
      const type = source && !input.volumeType
        ? (await this.deps.types.find(tx, source.typeId ?? '', { isAdmin: true, projectId: caller.projectId })) ?? await this.defaultType(tx, caller)
        : await this.resolveType(tx, caller, input.volumeType);
      const group = input.groupId ? await checkNewMember(this.deps.db, tx, caller, input.groupId, type.id, Boolean(input.volumeType)) : undefined;
      if (group && source) throw new InvalidInputError('Invalid input received: a copy cannot be created into a group; create it, then add it to the group (add_volumes).');
      if (group && input.availabilityZone !== null && input.availabilityZone !== group.availability_zone) {
        throw new InvalidInputError(`Invalid input received: Volume must be in the same availability zone as its group: ${group.availability_zone}.`);
      }
      let zone: string;
      if (source) {
        if (input.availabilityZone !== null && input.availabilityZone !== source.volume.availability_zone) {
          throw new InvalidInputError(`Invalid input received: Volume must be in the same availability zone as the ${source.kind}: ${source.volume.availability_zone}.`);
        }
        zone = source.volume.availability_zone;
        await this.refuseIfFrozen(tx, source.volume);
      } else {
        zone = await this.resolveZone(tx, input.availabilityZone ?? group?.availability_zone ?? null);
      }
      await this.deps.quotas.consume(tx, caller.projectId, volumeQuota(input.sizeGiB, type.name), input.sizeGiB);
      // After the checks above and the quota: a key made and then rolled back is one more key to sweep.
      const encryptionKeyId = await keyForNewVolume(this.deps, tx, { projectId: caller.projectId }, type, source, isMultiattachType(type));
      await volumes.insert(tx, {
        id, project_id: caller.projectId, user_id: caller.userId, name: input.name, description: input.description,
        size: input.sizeGiB, status: 'creating', attach_status: 'detached', availability_zone: zone,
        host: source?.volume.host ?? null, cluster_name: source?.volume.cluster_name ?? null, volume_type_id: type.id,
        snapshot_id: input.snapshotId ?? null, source_volid: input.sourceVolumeId ?? null,
        bootable: source?.volume.bootable ?? 0, multiattach: isMultiattachType(type) ? 1 : 0, provider_location: null, readonly: null,
        encryption_key_id: encryptionKeyId, created_at: isoAt(clock.now()), updated_at: null, launched_at: null, group_id: input.groupId ?? null,
      }, input.metadata);
      if (source) {
        await enqueue(kinds.create, { target: volumeTarget(source.volume.cluster_name!), resourceId: id, requestId: caller.requestId, payload: { volumeId: id, sizeGiB: input.sizeGiB } });
      } else {
        await enqueue(kinds.schedule, {
          target: 'scheduler', resourceId: id, requestId: caller.requestId,
          payload: { volumeId: id, sizeGiB: input.sizeGiB, availabilityZone: zone },
        });
      }
    });
    return (await volumes.get(this.deps.db.kysely, id))!;
  }

  /** Checks the snapshot or source volume of a copy; undefined for an empty volume. */
  private async copySource(tx: Tx, caller: Caller, input: CreateVolumeInput): Promise<CopySource & { volume: VolumeRow } | undefined> {
    if (input.snapshotId && input.sourceVolumeId) throw new InvalidInputError('Invalid input received: give either snapshot_id or source_volid, not both.');
    if (input.snapshotId) {
      const snap = await this.lockSnapshot(caller, input.snapshotId, tx);
      if (snap.status !== 'available') throw new InvalidStatusError(`Invalid snapshot: Originating snapshot status must be one of 'available' values`);
      if (input.sizeGiB < snap.volume_size) {
        throw new InvalidInputError(`Invalid input received: Volume size '${input.sizeGiB}'GB cannot be smaller than the snapshot size ${snap.volume_size}GB. They must be >= original snapshot size.`);
      }
      const volume = (await this.deps.volumes.get(tx, snap.volume_id))!;
      return { kind: 'snapshot', volume, typeId: snap.volume_type_id, encryptionKeyId: snap.encryption_key_id };
    }
    if (input.sourceVolumeId) {
      const volume = await this.lockVolume(caller, input.sourceVolumeId, tx);
      if (volume.status !== 'available') throw new InvalidStatusError(`Invalid volume: Source volume status must be available, but current status is: ${volume.status}.`);
      const busy = await busyReason(this.deps, tx, volume.id, { reading: true });
      if (busy) throw new InvalidStatusError(`Invalid volume: Source volume ${volume.id} is busy: ${busy}.`);
      if (input.sizeGiB < volume.size) {
        throw new InvalidInputError(`Invalid input received: Volume size '${input.sizeGiB}'GB cannot be smaller than the source volume size ${volume.size}GB. They must be >= original volume size.`);
      }
      return { kind: 'source volume', volume, typeId: volume.volume_type_id, encryptionKeyId: volume.encryption_key_id };
    }
    return undefined;
  }

  /**
   * Moves an available volume to `extending` and queues the driver work.
   * @throws NotFoundError, InvalidInputError (size not larger), InvalidStatusError, QuotaExceededError.
   */
  async requestExtend(caller: Caller, id: string, newSizeGiB: number, opts: { inUseAllowed?: (tx: Tx, cluster: string) => Promise<boolean> } = {}): Promise<void> {
    const { queue, kinds } = this.deps;
    await queue.transaction(async (tx, enqueue) => {
      const v = await this.lockVolume(caller, id, tx);
      const inUse = v.status === 'in-use' && opts.inUseAllowed !== undefined && await opts.inUseAllowed(tx, v.cluster_name!);
      if (v.status !== 'available' && !inUse) {
        throw new InvalidStatusError(`Invalid volume: Volume ${id} status must be available${opts.inUseAllowed ? ' or in-use on a backend that extends online' : ''} to extend, but current status is: ${v.status}.`);
      }
      if (newSizeGiB <= v.size) {
        throw new InvalidInputError(`Invalid input received: New size for extend must be greater than current size. (current: ${v.size}, extended: ${newSizeGiB}).`);
      }
      await this.refuseIfBusy(tx, v.id);
      await this.refuseIfFrozen(tx, v);
      await this.refuseIfNoRoom(tx, v, newSizeGiB - v.size);
      const typeName = await typeNameOf(this.deps.types, tx, v.volume_type_id);
      await this.deps.quotas.consume(tx, v.project_id, volumeQuota(newSizeGiB - v.size, typeName, 0), newSizeGiB);
      await this.cas(tx, v.id, [v.status], 'extending', caller);
      await enqueue(kinds.extend, { target: volumeTarget(v.cluster_name!), resourceId: id, requestId: caller.requestId, payload: { volumeId: id, newSizeGiB } });
    });
  }

  /**
   * Moves the volume (and with `cascade` its snapshots) to `deleting` and
   * queues the driver work; a volume never placed on a backend is removed at once.
   * An admin's `force` deletes from any status, as Cinder's does (a job still
   * running for the volume finds the status changed under the volume's lock and stops).
   * @throws NotFoundError, InvalidStatusError (wrong status, attached, snapshots without cascade, busy).
   */
  async requestDelete(caller: Caller, id: string, opts: { force?: boolean; cascade?: boolean } = {}): Promise<void> {
    const { queue, kinds, snapshots } = this.deps;
    await queue.transaction(async (tx, enqueue) => {
      const v = await this.lockVolume(caller, id, tx);
      const allowed: readonly string[] = opts.force ? [v.status] : DELETABLE_STATUSES;
      if (!allowed.includes(v.status) || v.attach_status === 'attached') {
        throw new InvalidStatusError(`Invalid volume: Volume status must be ${allowed.join(', ')} and must not be migrating, attached, belong to a group, have snapshots or be disassociated from snapshots after volume transfer.`);
      }
      if (v.group_id) throw new InvalidStatusError(`Invalid volume: Volume ${id} belongs to group ${v.group_id}: remove it from the group first, or delete the group with its volumes.`);
      await refuseIfAttached(tx, v.id);
      await this.refuseIfBusy(tx, v.id);
      await this.refuseIfFrozen(tx, v);
      const snaps = await snapshots.ofVolume(tx, v.id);
      const grouped = snaps.find((s) => s.group_snapshot_id);
      if (grouped) throw new InvalidStatusError(`Invalid volume: Snapshot ${grouped.id} of volume ${id} is part of group snapshot ${grouped.group_snapshot_id}: delete the group snapshot first.`);
      if (snaps.length > 0 && !opts.cascade) {
        throw new InvalidStatusError(`Invalid volume: Volume ${id} still has ${snaps.length} dependent snapshots.`);
      }
      for (const s of snaps) {
        if (!(await snapshots.transition(tx, { id: s.id, from: SNAPSHOT_DELETABLE_STATUSES, to: 'deleting', requestId: caller.requestId }))) {
          throw new InvalidStatusError(`Invalid volume: Snapshot ${s.id} of the volume is ${s.status} and cannot be deleted.`);
        }
      }
      // Destroy data last: what refers to the volume goes first, in this transaction.
      await releaseVolumeReferences(this.deps, tx, enqueue, v, caller.requestId);
      await this.cas(tx, v.id, allowed, 'deleting', caller);
      if (v.cluster_name === null) {
        // Never reached a backend (failed scheduling): nothing to delete but the row (and its key).
        if (v.encryption_key_id) await this.deps.keys.deleteKey({ projectId: v.project_id }, v.encryption_key_id);
        await removeVolume(this.deps, tx, { ...v, status: 'deleting' }, caller.requestId);
        return;
      }
      await enqueue(kinds.delete, { target: volumeTarget(v.cluster_name), resourceId: id, requestId: caller.requestId, payload: { volumeId: id, snapshotIds: snaps.map((s) => s.id) } });
    });
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
   * Reverts an available volume to its latest snapshot (3.40).
   * @throws NotFoundError, InvalidInputError (not the latest, other volume, no backend support), InvalidStatusError.
   */
  async requestRevert(caller: Caller, id: string, snapshotId: string, backendCanRevert: (tx: Tx, cluster: string) => Promise<boolean>): Promise<void> {
    const { queue, kinds, snapshots } = this.deps;
    await queue.transaction(async (tx, enqueue) => {
      const v = await this.lockVolume(caller, id, tx);
      const snap = await this.getSnapshot(caller, snapshotId, tx);
      if (snap.volume_id !== v.id) throw new InvalidInputError(`Invalid input received: Snapshot ${snapshotId} is not a snapshot of volume ${id}.`);
      if (v.status !== 'available') throw new InvalidStatusError(`Invalid volume: Volume ${id} status must be available to revert, but current status is: ${v.status}.`);
      if (snap.status !== 'available') throw new InvalidStatusError(`Invalid snapshot: Snapshot ${snapshotId} status must be available to revert, but current status is: ${snap.status}.`);
      const all = await snapshots.ofVolume(tx, v.id);
      if (all[all.length - 1]?.id !== snap.id) {
        throw new InvalidInputError(`Invalid input received: Snapshot ${snapshotId} is not the latest one of volume ${id}; only the latest snapshot can be reverted to.`);
      }
      if (v.size !== snap.volume_size) {
        throw new InvalidInputError(`Invalid input received: Volume ${id} size (${v.size} GiB) and snapshot size (${snap.volume_size} GiB) must be equal to revert; create a new volume from the snapshot instead.`);
      }
      if (!(await backendCanRevert(tx, v.cluster_name!))) {
        throw new InvalidInputError(`Invalid input received: the backend of volume ${id} cannot revert to a snapshot.`);
      }
      await this.refuseIfBusy(tx, v.id);
      await this.refuseIfFrozen(tx, v);
      await this.cas(tx, v.id, ['available'], 'reverting', caller);
      await snapshots.transition(tx, { id: snap.id, from: ['available'], to: 'restoring', requestId: caller.requestId });
      await enqueue(kinds.revert, { target: volumeTarget(v.cluster_name!), resourceId: v.id, requestId: caller.requestId, payload: { volumeId: v.id, snapshotId: snap.id } });
    });
  }

  /**
   * `os-retype` without migration: gives the volume another type where it is,
   * at once, when its pool meets the new type's extra specs (moving its
   * per-type quota in the same transaction). A retype that would need the
   * volume moved to another backend, or its data encrypted differently, is
   * refused until migration exists.
   * @throws NotFoundError, InvalidInputError (same type, pool does not fit, encryption differs, migration needed), InvalidStatusError, QuotaExceededError.
   */
  async requestRetype(caller: Caller, id: string, newType: string, migrationPolicy: 'never' | 'on-demand'): Promise<void> {
    await this.deps.queue.transaction(async (tx) => {
      const v = await this.lockVolume(caller, id, tx);
      if (v.status !== 'available' && v.status !== 'in-use') {
        throw new InvalidStatusError(`Invalid volume: Volume ${id} status must be available or in-use to retype, but current status is: ${v.status}.`);
      }
      if (v.group_id) throw new InvalidInputError(`Invalid input received: Volume ${id} belongs to a group; remove it from the group first.`);
      const type = await this.resolveType(tx, caller, newType);
      if (type.id === v.volume_type_id) throw new InvalidInputError('Invalid input received: New volume_type same as original.');
      await this.deps.typeEncryption.lockType(tx, type.id, 'share');
      if (!(await this.deps.typeEncryption.sameEncryption(tx, v.volume_type_id, type.id))) {
        // The data would have to be copied through a new encryption layer (Cinder migrates for it).
        throw new InvalidInputError(`Invalid input received: volume type ${type.name} encrypts volumes differently from the volume's type; `
          + (migrationPolicy === 'on-demand' ? 'retype with migration is not supported by this Basalt release.' : "the volume would have to be copied, which migration_policy 'never' forbids."));
      }
      await this.refuseIfBusy(tx, v.id);
      await this.refuseIfFrozen(tx, v);
      const reported = v.host ? await reportedPool(tx, v.host) : undefined;
      const unmet = reported ? unmetSpecs(reported.report, reported.pool, type.extra_specs) : [];
      if (!reported || unmet.length > 0) {
        throw new InvalidInputError(`Invalid input received: pool ${v.host} does not meet volume type ${type.name}${unmet.length ? ` (${unmet.join(', ')})` : ''}; `
          + (migrationPolicy === 'on-demand' ? 'retype with migration is not supported by this Basalt release.' : "the volume would have to move, which migration_policy 'never' forbids."));
      }
      const oldName = await typeNameOf(this.deps.types, tx, v.volume_type_id);
      // Only the per-type resources move: the totals stay the same.
      await this.deps.quotas.consume(tx, v.project_id, { [`volumes_${type.name}`]: 1, [`gigabytes_${type.name}`]: v.size }, v.size);
      if (oldName) await this.deps.quotas.release(tx, v.project_id, { [`volumes_${oldName}`]: 1, [`gigabytes_${oldName}`]: v.size });
      const multiattach = isMultiattachType(type) ? 1 : 0;
      if (v.status === 'in-use' && multiattach !== v.multiattach) {
        throw new InvalidInputError('Invalid input received: an in-use volume cannot change between multiattach and single-attach types; detach it first.');
      }
      await this.cas(tx, v.id, [v.status], v.status, caller, { volume_type_id: type.id, multiattach });
    });
  }

  /**
   * Records a snapshot in `creating` and queues it for the volume's backend.
   * @throws NotFoundError, InvalidStatusError, QuotaExceededError.
   */
  async requestSnapshot(caller: Caller, input: CreateSnapshotInput): Promise<SnapshotRow> {
    const { queue, kinds, snapshots, clock } = this.deps;
    const id = newId();
    await queue.transaction(async (tx, enqueue) => {
      const v = await this.lockVolume(caller, input.volumeId, tx);
      const allowed = input.force ? ['available', 'in-use'] : ['available'];
      if (!allowed.includes(v.status)) {
        throw new InvalidStatusError(`Invalid volume: Volume ${v.id} status must be ${allowed.join(' or ')}, but current status is: ${v.status}.`);
      }
      await this.refuseIfBusy(tx, v.id, { reading: true });
      await this.refuseIfFrozen(tx, v);
      if (v.status === 'in-use') await this.refuseIfUnquiescable(tx, v);
      await this.deps.quotas.consume(tx, caller.projectId, snapshotQuota(v.size, await typeNameOf(this.deps.types, tx, v.volume_type_id)));
      await snapshots.insert(tx, {
        id, project_id: caller.projectId, user_id: caller.userId, volume_id: v.id, volume_size: v.size,
        volume_type_id: v.volume_type_id, name: input.name, description: input.description, status: 'creating', encryption_key_id: v.encryption_key_id,
        created_at: isoAt(clock.now()), updated_at: null, group_snapshot_id: null, progress: null,
      }, input.metadata);
      await enqueue(kinds.snapshotCreate, { target: await this.snapshotTarget(tx, v), resourceId: id, requestId: caller.requestId, payload: { snapshotId: id } });
    });
    return (await snapshots.get(this.deps.db.kysely, id))!;
  }

  /**
   * Moves a snapshot to `deleting` and queues the driver work; an admin's
   * `force` (os-force_delete) deletes from any status, as Cinder's does.
   * @throws NotFoundError, InvalidStatusError (wrong status, volumes being made from it).
   */
  async requestSnapshotDelete(caller: Caller, id: string, opts: { force?: boolean } = {}): Promise<void> {
    const { queue, kinds, snapshots, volumes } = this.deps;
    await queue.transaction(async (tx, enqueue) => {
      const s = await this.lockSnapshot(caller, id, tx);
      const allowed: readonly string[] = opts.force ? [s.status] : SNAPSHOT_DELETABLE_STATUSES;
      if (!allowed.includes(s.status)) {
        throw new InvalidStatusError(`Invalid snapshot: Snapshot status must be available or error and must not be part of a group, but current status is: ${s.status}.`);
      }
      if (s.group_snapshot_id) throw new InvalidStatusError(`Invalid snapshot: Snapshot ${id} is part of group snapshot ${s.group_snapshot_id}: delete the group snapshot instead.`);
      const copying = await tx.selectFrom('volumes').select('id').where('snapshot_id', '=', id).where('status', '=', 'creating').executeTakeFirst();
      if (copying) throw new InvalidStatusError(`Invalid snapshot: volume ${copying.id} is being created from it.`);
      if (!(await snapshots.transition(tx, { id, from: allowed, to: 'deleting', requestId: caller.requestId }))) {
        throw new InvalidStatusError(`Invalid snapshot: Snapshot ${id} status changed concurrently; try again.`);
      }
      const v = (await volumes.get(tx, s.volume_id))!;
      await enqueue(kinds.snapshotDelete, { target: volumeTarget(v.cluster_name!), resourceId: id, requestId: caller.requestId, payload: { snapshotId: id } });
    });
  }

  /**
   * An admin's `os-reset_status`: sets a volume's status (and attach status)
   * whatever it is now — the way out of a state only an operator can judge.
   * A job still running for the volume finds the status changed and stops.
   * @throws NotFoundError.
   */
  async resetStatus(caller: Caller, id: string, to: { status?: string; attachStatus?: string }): Promise<void> {
    await this.deps.queue.transaction(async (tx) => {
      const v = await this.lockVolume(caller, id, tx);
      await this.cas(tx, v.id, [v.status], to.status ?? v.status, caller, to.attachStatus ? { attach_status: to.attachStatus } : undefined);
    });
  }

  /**
   * An admin's snapshot `os-reset_status`.
   * @throws NotFoundError.
   */
  async resetSnapshotStatus(caller: Caller, id: string, status: string): Promise<void> {
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
    const allowed: Record<string, readonly string[]> = { creating: ['creating', 'available', 'error'], deleting: ['deleting', 'error_deleting'] };
    await this.deps.queue.transaction(async (tx) => {
      const s = await this.lockSnapshot(caller, id, tx);
      const to = allowed[s.status];
      if (!to) throw new InvalidInputError(`Invalid input received: Snapshot status ${s.status} not allowed for update_snapshot_status.`);
      if (!to.includes(status)) throw new InvalidInputError(`Invalid input received: Provided snapshot status ${status} not allowed for snapshot with status ${s.status}.`);
      await this.deps.snapshots.transition(tx, { id, from: [s.status], to: status, requestId: caller.requestId, ...(progress ? { set: { progress } } : {}) });
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
   * service last reported it) must hold `moreGiB` more. The service row's lock
   * serialises this with placements on the same pool.
   * @throws InvalidInputError naming the pool.
   */
  private async refuseIfNoRoom(tx: Tx, v: VolumeRow, moreGiB: number): Promise<void> {
    const reported = v.host ? await reportedPool(tx, v.host) : undefined;
    if (!reported) return; // not reported yet: the driver's own check decides
    await this.deps.db.lockRows(tx, 'services', [reported.service.id]);
    if (!fits(reported.pool, await this.deps.volumes.provisionedGiB(tx, v.host!), moreGiB)) {
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

  private async cas(tx: Tx, id: string, from: readonly string[], to: string, caller: Caller, set?: Partial<VolumeRow>): Promise<void> {
    if (!(await this.deps.volumes.transition(tx, { id, from, to, requestId: caller.requestId, ...(set ? { set } : {}) }))) {
      throw new InvalidStatusError(`Invalid volume: Volume ${id} status changed concurrently; try again.`);
    }
  }
}
