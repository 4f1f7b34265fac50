/**
 * The job kinds of the volume and snapshot lifecycle, known to every role.
 * Each kind's `onFailure` moves the resource from its transitional status to
 * the matching error status and records a user message, all in the failing
 * transaction (and gives back quota the failed change had taken).
 */
import type { Clock } from '../common/index.ts';
import type { JobRow, SnapshotRepository, VolumeRepository, VolumeTypeRepository } from '../db/index.ts';
import type { BasaltError } from '../errors/index.ts';
import type { JobKind, Tx } from '../jobs/index.ts';
import type { QuotaEngine } from '../quota/index.ts';
import { typeNameOf, volumeQuota } from './volume-quota.ts';
import { detailArgsFor, detailFor, MESSAGE_ACTIONS, recordUserMessage, type MessageAction, type MessageDetail } from '../messages/index.ts';

/** `volume.schedule` (target `scheduler`): pick a backend for a new volume. */
export interface SchedulePayload { volumeId: string; sizeGiB: number; availabilityZone: string }
/**
 * `volume.create` (target `volume:<cluster>`): make the volume on its backend —
 * empty, from its `snapshot_id`, or as a clone of its `source_volid` (read from the row).
 */
export interface CreatePayload { volumeId: string; sizeGiB: number }
/** `volume.extend`: grow the volume to `newSizeGiB`. */
export interface ExtendPayload { volumeId: string; newSizeGiB: number }
/**
 * `volume.delete`: remove the volume (and, for cascade, its snapshots) from
 * its backend, then the rows. v2 names the cascaded snapshots; a v1 payload
 * (from release N-1) leaves them to be inferred from their `deleting` status.
 */
export interface DeletePayload { volumeId: string; snapshotIds?: string[] }
/** `volume.revert`: put the snapshot's data back into the volume (3.40). */
export interface RevertPayload { volumeId: string; snapshotId: string }
/** `snapshot.create` / `snapshot.delete` (target: the volume's cluster). */
export interface SnapshotPayload { snapshotId: string }

/** `export.fence` (target: the volume's cluster): drop every connection of a deleted attachment's export. */
export interface FencePayload { exportName: string }

/** Every kind, built over the deps their failure handling needs. */
export interface VolumeJobKinds {
  schedule: JobKind<SchedulePayload>;
  create: JobKind<CreatePayload>;
  extend: JobKind<ExtendPayload>;
  delete: JobKind<DeletePayload>;
  revert: JobKind<RevertPayload>;
  snapshotCreate: JobKind<SnapshotPayload>;
  snapshotDelete: JobKind<SnapshotPayload>;
  fence: JobKind<FencePayload>;
}

/** Everything `onFailure` touches. */
export interface VolumeJobDeps {
  volumes: VolumeRepository;
  snapshots: SnapshotRepository;
  quotas: QuotaEngine;
  types: VolumeTypeRepository;
  clock: Clock;
  messageTtlSeconds: number;
}

/** A transitional status, the status it ends in when its work fails, and the action users read. */
export interface TransitionalStatus { error: string; action: MessageAction }

/** Transitional statuses of volumes. */
export const VOLUME_TRANSITIONAL: Record<string, TransitionalStatus> = {
  creating: { error: 'error', action: MESSAGE_ACTIONS.CREATE_VOLUME },
  extending: { error: 'error_extending', action: MESSAGE_ACTIONS.EXTEND_VOLUME },
  deleting: { error: 'error_deleting', action: MESSAGE_ACTIONS.DELETE_VOLUME },
  reverting: { error: 'error', action: MESSAGE_ACTIONS.REVERT_VOLUME },
};

/** Transitional statuses of snapshots (`restoring` is the snapshot side of a revert). */
export const SNAPSHOT_TRANSITIONAL: Record<string, TransitionalStatus> = {
  creating: { error: 'error', action: MESSAGE_ACTIONS.SNAPSHOT_CREATE },
  deleting: { error: 'error_deleting', action: MESSAGE_ACTIONS.SNAPSHOT_DELETE },
  restoring: { error: 'available', action: MESSAGE_ACTIONS.REVERT_VOLUME },
};

function parser<P>(fields: Record<string, 'string' | 'number'>, versions: readonly number[] = [1]) {
  return (payload: unknown, version: number): P => {
    if (!versions.includes(version)) throw new Error(`payload version ${version} is not readable`);
    if (payload === null || typeof payload !== 'object') throw new Error('payload must be an object');
    for (const [name, type] of Object.entries(fields)) {
      if (typeof (payload as Record<string, unknown>)[name] !== type) throw new Error(`payload field ${name} must be a ${type}`);
    }
    return payload as P;
  };
}

/** What to fail: a volume or a snapshot. */
export type FailTarget = { volumeId: string } | { snapshotId: string };

/**
 * Moves a volume or snapshot from `from` to its error status and records a
 * user message about it. Used by every kind's `onFailure` and by the sweeper.
 * Returns false when the row was not in `from` (someone else settled it).
 */
export async function failResource(
  deps: VolumeJobDeps, tx: Tx, target: FailTarget, from: string, detail: MessageDetail, requestId: string | null,
  detailArgs: string | null = null,
): Promise<boolean> {
  const isVolume = 'volumeId' in target;
  const id = isVolume ? target.volumeId : target.snapshotId;
  const repo = isVolume ? deps.volumes : deps.snapshots;
  const status = (isVolume ? VOLUME_TRANSITIONAL : SNAPSHOT_TRANSITIONAL)[from]!;
  const row = await repo.get(tx, id);
  if (!row || !(await repo.transition(tx, { id, from: [from], to: status.error, requestId }))) return false;
  await recordUserMessage(tx, deps.clock, deps.messageTtlSeconds, {
    projectId: row.project_id, resourceType: isVolume ? 'volume' : 'snapshot', resourceId: id,
    action: status.action, detail, detailArgs, requestId,
  });
  return true;
}

/** Builds the job kinds. */
export function volumeJobKinds(deps: VolumeJobDeps): VolumeJobKinds {
  const failing = (target: (p: any) => FailTarget, from: string) => // eslint-disable-line @typescript-eslint/no-explicit-any
    async (tx: Tx, payload: unknown, job: JobRow, err: BasaltError): Promise<void> => {
      await failResource(deps, tx, target(payload), from, detailFor(err), job.request_id, detailArgsFor(err));
    };
  const volume = (p: { volumeId: string }): FailTarget => ({ volumeId: p.volumeId });
  const snapshot = (p: { snapshotId: string }): FailTarget => ({ snapshotId: p.snapshotId });
  return {
    schedule: {
      kind: 'volume.schedule', version: 1, minVersion: 1, resourceType: 'volume',
      parse: parser<SchedulePayload>({ volumeId: 'string', sizeGiB: 'number', availabilityZone: 'string' }),
      async onFailure(tx, payload, job, err) {
        // Scheduling has its own action in the message: "schedule allocate volume".
        const v = await deps.volumes.get(tx, payload.volumeId);
        if (!v || !(await deps.volumes.transition(tx, { id: v.id, from: ['creating'], to: 'error', requestId: job.request_id }))) return;
        await recordUserMessage(tx, deps.clock, deps.messageTtlSeconds, {
          projectId: v.project_id, resourceType: 'volume', resourceId: v.id, action: MESSAGE_ACTIONS.SCHEDULE_ALLOCATE_VOLUME,
          detail: detailFor(err), detailArgs: detailArgsFor(err), requestId: job.request_id,
        });
      },
    },
    create: {
      kind: 'volume.create', version: 1, minVersion: 1, resourceType: 'volume',
      parse: parser<CreatePayload>({ volumeId: 'string', sizeGiB: 'number' }),
      onFailure: failing(volume, 'creating'),
    },
    extend: {
      kind: 'volume.extend', version: 1, minVersion: 1, resourceType: 'volume',
      parse: parser<ExtendPayload>({ volumeId: 'string', newSizeGiB: 'number' }),
      async onFailure(tx, payload, job, err) {
        const v = await deps.volumes.get(tx, payload.volumeId);
        if (!v || !(await failResource(deps, tx, volume(payload), 'extending', detailFor(err), job.request_id))) return;
        // The size did not change: give back what the request took.
        await deps.quotas.release(tx, v.project_id, volumeQuota(payload.newSizeGiB - v.size, await typeNameOf(deps.types, tx, v.volume_type_id), 0));
      },
    },
    delete: {
      kind: 'volume.delete', version: 2, minVersion: 1, resourceType: 'volume',
      parse: (payload, version) => {
        const p = parser<DeletePayload>({ volumeId: 'string' }, [1, 2])(payload, version);
        if (version >= 2 && !(Array.isArray(p.snapshotIds) && p.snapshotIds.every((x) => typeof x === 'string'))) {
          throw new Error('payload field snapshotIds must be a list of ids');
        }
        return version >= 2 ? p : { volumeId: p.volumeId };
      },
      encode: (p, version) => (version >= 2 ? p : { volumeId: p.volumeId }),
      async onFailure(tx, payload, job, err) {
        await failResource(deps, tx, volume(payload), 'deleting', detailFor(err), job.request_id);
        for (const s of await deps.snapshots.ofVolume(tx, payload.volumeId)) {
          if (s.status === 'deleting') await failResource(deps, tx, { snapshotId: s.id }, 'deleting', detailFor(err), job.request_id);
        }
      },
    },
    revert: {
      kind: 'volume.revert', version: 1, minVersion: 1, resourceType: 'volume',
      parse: parser<RevertPayload>({ volumeId: 'string', snapshotId: 'string' }),
      async onFailure(tx, payload, job, err) {
        await failResource(deps, tx, volume(payload), 'reverting', detailFor(err), job.request_id);
        await deps.snapshots.transition(tx, { id: payload.snapshotId, from: ['restoring'], to: 'available', requestId: job.request_id });
      },
    },
    snapshotCreate: {
      kind: 'snapshot.create', version: 1, minVersion: 1, resourceType: 'snapshot',
      parse: parser<SnapshotPayload>({ snapshotId: 'string' }),
      onFailure: failing(snapshot, 'creating'),
    },
    snapshotDelete: {
      kind: 'snapshot.delete', version: 1, minVersion: 1, resourceType: 'snapshot',
      parse: parser<SnapshotPayload>({ snapshotId: 'string' }),
      onFailure: failing(snapshot, 'deleting'),
    },
    fence: {
      kind: 'export.fence', version: 1, minVersion: 1, resourceType: 'attachment',
      parse: parser<FencePayload>({ exportName: 'string' }),
      // The attachment row is already gone, so the export name no longer
      // resolves: new connections are refused whatever happens to this job.
      async onFailure() { /* nothing to mark */ },
    },
  };
}

/** Job targets live with the service report (src/services); re-exported for the volume roles. */
export { memberTarget, volumeTarget } from '../services/index.ts';
