/**
 * Volume create: an empty volume (placed by the scheduler), a volume from a
 * snapshot, or a clone of a volume (both made on the source's backend, where
 * the data is).
 *
 * | | |
 * | --- | --- |
 * | starts from | a new row (a source snapshot `available`; a source volume `available` and not busy) |
 * | transitional | `creating` |
 * | ends in | `available` |
 * | error | `error` (action: create volume; schedule allocate volume when no pool takes it) |
 * | jobs | `volume.schedule` v1 (scheduler), `volume.create` v1 (the backend's cluster) |
 * | lock | `volume-<id>` |
 */
import { isoAt } from '../../common/index.ts';
import type { VolumeRow } from '../../db/index.ts';
import { DriverError, InvalidInputError, InvalidStatusError } from '../../errors/index.ts';
import { MESSAGE_ACTIONS } from '../../messages/index.ts';
import { volumeTarget } from '../../services/index.ts';
import { checkNewMember } from '../group-membership.ts';
import { busyReason } from '../lifecycle.ts';
import { keyForNewVolume, type CopySource } from '../volume-encryption.ts';
import { volumeQuota } from '../volume-quota.ts';
import { isMultiattachType, replicationOf } from '../volume-type-flags.ts';
import { operation, payloadParser, type RequestContext } from './operation.ts';

/** `volume.schedule` (target `scheduler`): pick a backend for a new volume. */
export interface SchedulePayload { volumeId: string; sizeGiB: number; availabilityZone: string }
/**
 * `volume.create` (target `volume:<cluster>`): make the volume on its backend —
 * empty, from its `snapshot_id`, or as a clone of its `source_volid` (read from the row).
 */
export interface CreatePayload { volumeId: string; sizeGiB: number }

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
  /** Put the volume in this group (3.13). */
  groupId?: string | null;
  /** Restore this backup onto the volume once it is made (3.47). */
  backupId?: string | null;
}

const create = { kind: 'volume.create', version: 1, minVersion: 1, parse: payloadParser<CreatePayload>({ volumeId: 'string', sizeGiB: 'number' }) } as const;
const schedule = {
  kind: 'volume.schedule', version: 1, minVersion: 1, action: MESSAGE_ACTIONS.SCHEDULE_ALLOCATE_VOLUME,
  parse: payloadParser<SchedulePayload>({ volumeId: 'string', sizeGiB: 'number', availabilityZone: 'string' }),
} as const;

/** The volume create operation. */
export const volumeCreate = operation<'volume', CreatePayload, CreateVolumeInput>().create({
  shape: 'create',
  name: 'volume.create',
  resource: 'volume',
  from: [],
  transitional: 'creating',
  to: ['available'],
  error: 'error',
  action: MESSAGE_ACTIONS.CREATE_VOLUME,
  lock: 'volume',
  jobs: {
    main: create,
    schedule,
  },

  async request(ctx, id, input) {
    const { tx, caller, deps, look } = ctx;
    const source = await copySource(ctx, input);
    if (input.backupId) {
      if (source) throw new InvalidInputError('Invalid input received: give one of snapshot_id, source_volid and backup_id.');
      if (!deps.backupSource) throw new InvalidInputError('Invalid input received: this process cannot create volumes from backups.');
      await deps.backupSource.reserve(tx, caller, input.backupId, input.sizeGiB, id);
    }
    const type = source && !input.volumeType
      ? (await deps.types.find(tx, source.typeId ?? '', { isAdmin: true, projectId: caller.projectId })) ?? await look.defaultType(tx, caller)
      : await look.resolveType(tx, caller, input.volumeType);
    const group = input.groupId ? await checkNewMember(deps.db, tx, caller, input.groupId, type.id, Boolean(input.volumeType)) : undefined;
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
      await look.refuseIfFrozen(tx, source.volume);
    } else {
      zone = await look.resolveZone(tx, input.availabilityZone ?? group?.availability_zone ?? null);
    }
    await deps.quotas.consume(tx, caller.projectId, volumeQuota(input.sizeGiB, type.name), input.sizeGiB);
    // After the checks above and the quota: a key made and then rolled back is one more key to sweep.
    const encryptionKeyId = await keyForNewVolume(deps, tx, { projectId: caller.projectId }, type, source, isMultiattachType(type));
    const row: VolumeRow = {
      id, project_id: caller.projectId, user_id: caller.userId, name: input.name, description: input.description,
      size: input.sizeGiB, status: 'creating', attach_status: 'detached', availability_zone: zone,
      host: source?.volume.host ?? null, cluster_name: source?.volume.cluster_name ?? null, volume_type_id: type.id,
      snapshot_id: input.snapshotId ?? null, source_volid: input.sourceVolumeId ?? null,
      bootable: source?.volume.bootable ?? 0, multiattach: isMultiattachType(type) ? 1 : 0, provider_location: null, readonly: null,
      encryption_key_id: encryptionKeyId, created_at: isoAt(deps.clock.now()), updated_at: null, launched_at: null, group_id: input.groupId ?? null,
      migration_status: null, migration_host: null,
      // A replicated volume has no secondary copy until its first point ships (Cinder's API says `enabled` at once).
      replication_status: replicationOf(type) ? 'copying' : 'disabled',
    };
    await deps.volumes.insert(tx, row, input.metadata);
    const created = { row, typeName: type.name };
    return source
      ? { created, job: { schema: create, target: volumeTarget(source.volume.cluster_name!), payload: { volumeId: id, sizeGiB: input.sizeGiB } satisfies CreatePayload } }
      : { created, job: { schema: schedule, target: 'scheduler', payload: { volumeId: id, sizeGiB: input.sizeGiB, availabilityZone: zone } satisfies SchedulePayload } };
  },

  async run({ deps, driver }, v, p) {
    const vol = { id: v.id, sizeGiB: p.sizeGiB };
    // The request and the deletes keep a copy's source while the copy is being
    // made; should it be gone all the same (an admin's force), the create fails
    // for good, and what an interrupted earlier attempt left goes first.
    const sourceGone = async (what: string): Promise<never> => {
      await driver.deleteVolume({ id: v.id });
      throw new DriverError(`The ${what} of volume ${v.id} no longer exists`);
    };
    if (v.snapshot_id) {
      const s = await deps.snapshots.get(deps.db.kysely, v.snapshot_id) ?? await sourceGone(`source snapshot ${v.snapshot_id}`);
      await driver.createVolumeFromSnapshot(vol, { id: s.id, volumeId: s.volume_id, sizeGiB: s.volume_size });
    } else if (v.source_volid) {
      const src = await deps.volumes.get(deps.db.kysely, v.source_volid) ?? await sourceGone(`source volume ${v.source_volid}`);
      await driver.cloneVolume(vol, { id: src.id, sizeGiB: src.size });
    } else {
      await driver.createVolume(vol);
    }
  },

  async finish({ tx, enqueue, deps, requestId }, v) {
    // Made from a backup (3.47): the restore runs first, and makes it available.
    if (await deps.backupRestore?.afterCreate(tx, enqueue, v, requestId)) return;
    await deps.volumes.transition(tx, { id: v.id, from: ['creating'], to: 'available', set: { launched_at: isoAt(deps.clock.now()) }, requestId });
  },
});

/** Checks the snapshot or source volume of a copy (locking its volume's row); undefined for an empty volume. */
async function copySource({ tx, caller, deps, look }: RequestContext, input: CreateVolumeInput): Promise<CopySource & { volume: VolumeRow } | undefined> {
  if (input.snapshotId && input.sourceVolumeId) throw new InvalidInputError('Invalid input received: give either snapshot_id or source_volid, not both.');
  if (input.snapshotId) {
    const snap = await look.lockSnapshot(caller, input.snapshotId, tx);
    if (snap.status !== 'available') throw new InvalidStatusError(`Invalid snapshot: Originating snapshot status must be one of 'available' values`);
    if (input.sizeGiB < snap.volume_size) {
      throw new InvalidInputError(`Invalid input received: Volume size '${input.sizeGiB}'GB cannot be smaller than the snapshot size ${snap.volume_size}GB. They must be >= original snapshot size.`);
    }
    const volume = (await deps.volumes.get(tx, snap.volume_id))!;
    return { kind: 'snapshot', volume, typeId: snap.volume_type_id, encryptionKeyId: snap.encryption_key_id };
  }
  if (input.sourceVolumeId) {
    const volume = await look.lockVolume(caller, input.sourceVolumeId, tx);
    if (volume.status !== 'available') throw new InvalidStatusError(`Invalid volume: Source volume status must be available, but current status is: ${volume.status}.`);
    const busy = await busyReason(deps, tx, volume.id, { reading: true });
    if (busy) throw new InvalidStatusError(`Invalid volume: Source volume ${volume.id} is busy: ${busy}.`);
    if (input.sizeGiB < volume.size) {
      throw new InvalidInputError(`Invalid input received: Volume size '${input.sizeGiB}'GB cannot be smaller than the source volume size ${volume.size}GB. They must be >= original volume size.`);
    }
    return { kind: 'source volume', volume, typeId: volume.volume_type_id, encryptionKeyId: volume.encryption_key_id };
  }
  return undefined;
}
