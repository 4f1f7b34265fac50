/**
 * The volume manager owns every status transition of a volume. The API calls
 * its `request*` methods, which change the row with a compare-and-swap and
 * write the job in the same transaction; the volume service runs the handlers
 * from {@link volumeHandlers}, which call the driver and finish the transition.
 */
import type { Caller, Clock } from '../common/index.ts';
import { isoAt, newId } from '../common/index.ts';
import type { Db, ProjectScope, ServiceRepository, VolumeRepository, VolumeRow, VolumeType, VolumeTypeRepository } from '../db/index.ts';
import { BasaltError, InvalidInputError, InvalidStatusError, NotFoundError } from '../errors/index.ts';
import type { JobHandler, JobQueue, Tx } from '../jobs/index.ts';
import type { GuardedDriver } from '../drivers/index.ts';
import type { QuotaEngine } from '../quota/index.ts';
import { typeNameOf, volumeQuota } from './volume-quota.ts';
import { volumeTarget, type CreatePayload, type DeletePayload, type ExtendPayload, type VolumeJobKinds } from './volume-jobs.ts';

/** Statuses from which a volume may be deleted without `force` (Cinder's list). */
export const DELETABLE_STATUSES = ['available', 'error', 'error_restoring', 'error_extending', 'error_managing'] as const;
/** Added by an admin's `force`. */
export const FORCE_DELETABLE_STATUSES = [...DELETABLE_STATUSES, 'error_deleting'] as const;

/** A create request after validation. */
export interface CreateVolumeInput {
  sizeGiB: number;
  name: string | null;
  description: string | null;
  metadata: Record<string, string>;
  /** The zone asked for; null means the default zone. */
  availabilityZone: string | null;
  /** Type name or id; null means the project's (or the configured) default type. */
  volumeType: string | null;
}

/** What the manager needs. */
export interface VolumeManagerDeps {
  db: Db;
  quotas: QuotaEngine;
  queue: JobQueue;
  clock: Clock;
  volumes: VolumeRepository;
  kinds: VolumeJobKinds;
  types: VolumeTypeRepository;
  services: ServiceRepository;
  /** `[DEFAULT] default_volume_type`, `default_availability_zone`, `allow_availability_zone_fallback`. */
  options: { defaultVolumeType: string; defaultZone: string; zoneFallback: boolean };
}

/** The scope a caller sees: own project, or everything for an admin asking for all. */
export function scopeOf(caller: Caller, allTenants = false): ProjectScope {
  return caller.isAdmin && allTenants ? 'all' : { projectId: caller.projectId };
}

/** API-side volume operations. */
export class VolumeManager {
  constructor(private readonly deps: VolumeManagerDeps) {}

  /**
   * Finds a volume the caller may see (admins see every project's).
   * @throws NotFoundError when there is none (also for malformed ids).
   */
  async get(caller: Caller, id: string): Promise<VolumeRow> {
    const v = await this.deps.volumes.get(this.deps.db.kysely, id, caller.isAdmin ? 'all' : { projectId: caller.projectId });
    if (!v) throw NotFoundError.of('Volume', id);
    return v;
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

  /** Records the volume in `creating` and queues its scheduling, atomically. */
  async requestCreate(caller: Caller, input: CreateVolumeInput): Promise<VolumeRow> {
    const { queue, volumes, kinds, clock } = this.deps;
    const id = newId();
    const now = isoAt(clock.now());
    await queue.transaction(async (tx, enqueue) => {
      const type = await this.resolveType(tx, caller, input.volumeType);
      const zone = await this.resolveZone(tx, input.availabilityZone);
      await this.deps.quotas.consume(tx, caller.projectId, volumeQuota(input.sizeGiB, type.name), input.sizeGiB);
      await volumes.insert(tx, {
        id, project_id: caller.projectId, user_id: caller.userId, name: input.name, description: input.description,
        size: input.sizeGiB, status: 'creating', attach_status: 'detached', availability_zone: zone,
        host: null, cluster_name: null, volume_type_id: type.id, snapshot_id: null, source_volid: null,
        bootable: 0, multiattach: 0, provider_location: null, created_at: now, updated_at: null, launched_at: null,
      }, input.metadata);
      await enqueue(kinds.schedule, {
        target: 'scheduler', resourceId: id, requestId: caller.requestId,
        payload: { volumeId: id, sizeGiB: input.sizeGiB, availabilityZone: zone },
      });
    });
    return (await volumes.get(this.deps.db.kysely, id))!;
  }

  /**
   * Moves an available volume to `extending` and queues the driver work.
   * @throws NotFoundError, InvalidInputError (size not larger), InvalidStatusError.
   */
  async requestExtend(caller: Caller, id: string, newSizeGiB: number): Promise<void> {
    const { queue, volumes, kinds } = this.deps;
    await queue.transaction(async (tx, enqueue) => {
      const v = await volumes.get(tx, id, caller.isAdmin ? 'all' : { projectId: caller.projectId });
      if (!v) throw NotFoundError.of('Volume', id);
      if (v.status !== 'available') {
        throw new InvalidStatusError(`Invalid volume: Volume ${id} status must be available to extend, but current status is: ${v.status}.`);
      }
      if (newSizeGiB <= v.size) {
        throw new InvalidInputError(`Invalid input received: New size for extend must be greater than current size. (current: ${v.size}, extended: ${newSizeGiB}).`);
      }
      const typeName = await typeNameOf(this.deps.types, tx, v.volume_type_id);
      await this.deps.quotas.consume(tx, v.project_id, volumeQuota(newSizeGiB - v.size, typeName, 0), newSizeGiB);
      if (!(await volumes.transition(tx, { id, from: ['available'], to: 'extending', requestId: caller.requestId }))) {
        throw new InvalidStatusError(`Invalid volume: Volume ${id} status changed concurrently; try again.`);
      }
      await enqueue(kinds.extend, { target: volumeTarget(v.cluster_name!), resourceId: id, requestId: caller.requestId, payload: { volumeId: id, newSizeGiB } });
    });
  }

  /**
   * Moves the volume to `deleting` and queues the driver work; a volume never
   * placed on a backend is removed at once.
   * @throws NotFoundError, InvalidStatusError.
   */
  async requestDelete(caller: Caller, id: string, opts: { force?: boolean } = {}): Promise<void> {
    const { queue, volumes, kinds } = this.deps;
    const allowed: readonly string[] = opts.force ? FORCE_DELETABLE_STATUSES : DELETABLE_STATUSES;
    await queue.transaction(async (tx, enqueue) => {
      const v = await volumes.get(tx, id, caller.isAdmin ? 'all' : { projectId: caller.projectId });
      if (!v) throw NotFoundError.of('Volume', id);
      if (!allowed.includes(v.status) || v.attach_status === 'attached') {
        throw new InvalidStatusError(`Invalid volume: Volume status must be ${allowed.join(', ')} and must not be migrating, attached, belong to a group, have snapshots or be disassociated from snapshots after volume transfer.`);
      }
      if (!(await volumes.transition(tx, { id, from: allowed, to: 'deleting', requestId: caller.requestId }))) {
        throw new InvalidStatusError(`Invalid volume: Volume ${id} status changed concurrently; try again.`);
      }
      if (v.cluster_name === null) {
        // Never reached a backend (failed scheduling): nothing to delete but the row.
        await removeVolume(this.deps, tx, v, caller.requestId);
        return;
      }
      await enqueue(kinds.delete, { target: volumeTarget(v.cluster_name), resourceId: id, requestId: caller.requestId, payload: { volumeId: id } });
    });
  }
}

/** Deletes a `deleting` volume's row and gives its quota back, in `tx`. */
async function removeVolume(deps: Pick<VolumeManagerDeps, 'volumes' | 'quotas' | 'types'>, tx: Tx, v: VolumeRow, requestId: string | null): Promise<void> {
  if (await deps.volumes.deleteRow(tx, v.id, 'deleting', requestId)) {
    await deps.quotas.release(tx, v.project_id, volumeQuota(v.size, await typeNameOf(deps.types, tx, v.volume_type_id)));
  }
}

/**
 * The handlers a volume service runs for one backend. Each is idempotent: it
 * may run again after a crash and then completes the same step.
 */
export function volumeHandlers(deps: Pick<VolumeManagerDeps, 'volumes' | 'kinds' | 'db' | 'clock' | 'quotas' | 'types'>, driver: GuardedDriver): JobHandler<any>[] { // eslint-disable-line @typescript-eslint/no-explicit-any
  const { volumes, kinds } = deps;
  const create: JobHandler<CreatePayload> = {
    kind: kinds.create,
    async run(ctx, p) {
      const v = await volumes.get(deps.db.kysely, p.volumeId);
      if (!v || v.status !== 'creating') return ctx.complete(); // deleted or settled meanwhile
      await driver.createVolume({ id: p.volumeId, sizeGiB: p.sizeGiB });
      await ctx.complete(async (tx) => {
        await volumes.transition(tx, { id: p.volumeId, from: ['creating'], to: 'available', set: { launched_at: isoAt(deps.clock.now()) }, requestId: ctx.job.request_id });
      });
    },
  };
  const extend: JobHandler<ExtendPayload> = {
    kind: kinds.extend,
    async run(ctx, p) {
      const v = await volumes.get(deps.db.kysely, p.volumeId);
      if (!v || v.status !== 'extending') return ctx.complete();
      await driver.extendVolume({ id: p.volumeId, sizeGiB: v.size }, p.newSizeGiB);
      await ctx.complete(async (tx) => {
        await volumes.transition(tx, { id: p.volumeId, from: ['extending'], to: 'available', set: { size: p.newSizeGiB }, requestId: ctx.job.request_id });
      });
    },
  };
  const del: JobHandler<DeletePayload> = {
    kind: kinds.delete,
    async run(ctx, p) {
      const v = await volumes.get(deps.db.kysely, p.volumeId);
      if (!v || v.status !== 'deleting') return ctx.complete();
      await driver.deleteVolume({ id: p.volumeId });
      await ctx.complete(async (tx) => {
        await removeVolume(deps, tx, v, ctx.job.request_id);
      });
    },
  };
  return [create, extend, del];
}
