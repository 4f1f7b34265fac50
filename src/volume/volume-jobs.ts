/**
 * The job kinds of the volume lifecycle, known to every role. Each kind's
 * `onFailure` moves the volume from its transitional status to the matching
 * error status and records a user message, all in the failing transaction.
 */
import type { Clock } from '../common/index.ts';
import type { JobRow, VolumeRepository, VolumeTypeRepository } from '../db/index.ts';
import type { BasaltError } from '../errors/index.ts';
import type { JobKind, Tx } from '../jobs/index.ts';
import type { QuotaEngine } from '../quota/index.ts';
import { typeNameOf, volumeQuota } from './volume-quota.ts';
import { detailArgsFor, detailFor, MESSAGE_ACTIONS, recordUserMessage, type MessageAction, type MessageDetail } from '../messages/index.ts';

/** `volume.schedule` (target `scheduler`): pick a backend for a new volume. */
export interface SchedulePayload { volumeId: string; sizeGiB: number; availabilityZone: string }
/** `volume.create` (target `volume:<cluster>`): make the volume on its backend. */
export interface CreatePayload { volumeId: string; sizeGiB: number }
/** `volume.extend`: grow the volume to `newSizeGiB`. */
export interface ExtendPayload { volumeId: string; newSizeGiB: number }
/** `volume.delete`: remove the volume from its backend, then its row. */
export interface DeletePayload { volumeId: string }

/** The four kinds, built over the deps their failure handling needs. */
export interface VolumeJobKinds {
  schedule: JobKind<SchedulePayload>;
  create: JobKind<CreatePayload>;
  extend: JobKind<ExtendPayload>;
  delete: JobKind<DeletePayload>;
}

/** Everything `onFailure` touches. */
export interface VolumeJobDeps {
  volumes: VolumeRepository;
  quotas: QuotaEngine;
  types: VolumeTypeRepository;
  clock: Clock;
  messageTtlSeconds: number;
}

/** Statuses a volume passes through while a job works on it, with the error status each ends in. */
export const TRANSITIONAL_STATUSES: Record<string, { error: string; action: MessageAction }> = {
  creating: { error: 'error', action: MESSAGE_ACTIONS.CREATE_VOLUME },
  extending: { error: 'error_extending', action: MESSAGE_ACTIONS.EXTEND_VOLUME },
  deleting: { error: 'error_deleting', action: MESSAGE_ACTIONS.DELETE_VOLUME },
};

function field(o: Record<string, unknown>, name: string, type: 'string' | 'number'): void {
  if (typeof o[name] !== type) throw new Error(`payload field ${name} must be a ${type}`);
}

function parser<P>(fields: Record<string, 'string' | 'number'>) {
  return (payload: unknown, version: number): P => {
    if (version !== 1) throw new Error(`payload version ${version} is not readable`);
    if (payload === null || typeof payload !== 'object') throw new Error('payload must be an object');
    for (const [name, type] of Object.entries(fields)) field(payload as Record<string, unknown>, name, type);
    return payload as P;
  };
}

/**
 * Moves a volume from `from` to its error status and records a user message.
 * Exported for the sweeper's stuck rule, which does the same with its own detail.
 */
export async function failVolume(
  deps: VolumeJobDeps, tx: Tx, volumeId: string, from: string, action: MessageAction, detail: MessageDetail, requestId: string | null,
  detailArgs: string | null = null,
): Promise<boolean> {
  const volume = await deps.volumes.get(tx, volumeId);
  if (!volume) return false;
  const to = TRANSITIONAL_STATUSES[from]!.error;
  if (!(await deps.volumes.transition(tx, { id: volumeId, from: [from], to, requestId }))) return false;
  await recordUserMessage(tx, deps.clock, deps.messageTtlSeconds, {
    projectId: volume.project_id, resourceType: 'volume', resourceId: volumeId, action, detail, detailArgs, requestId,
  });
  return true;
}

/** Builds the volume job kinds. */
export function volumeJobKinds(deps: VolumeJobDeps): VolumeJobKinds {
  const onFailure = (from: string, action: MessageAction) =>
    async (tx: Tx, payload: { volumeId: string }, job: JobRow, err: BasaltError): Promise<void> => {
      await failVolume(deps, tx, payload.volumeId, from, action, detailFor(err), job.request_id, detailArgsFor(err));
    };
  return {
    schedule: {
      kind: 'volume.schedule', version: 1, minVersion: 1, resourceType: 'volume',
      parse: parser<SchedulePayload>({ volumeId: 'string', sizeGiB: 'number', availabilityZone: 'string' }),
      onFailure: onFailure('creating', MESSAGE_ACTIONS.SCHEDULE_ALLOCATE_VOLUME),
    },
    create: {
      kind: 'volume.create', version: 1, minVersion: 1, resourceType: 'volume',
      parse: parser<CreatePayload>({ volumeId: 'string', sizeGiB: 'number' }),
      onFailure: onFailure('creating', MESSAGE_ACTIONS.CREATE_VOLUME),
    },
    extend: {
      kind: 'volume.extend', version: 1, minVersion: 1, resourceType: 'volume',
      parse: parser<ExtendPayload>({ volumeId: 'string', newSizeGiB: 'number' }),
      async onFailure(tx, payload, job, err) {
        const v = await deps.volumes.get(tx, payload.volumeId);
        if (!v || !(await failVolume(deps, tx, payload.volumeId, 'extending', MESSAGE_ACTIONS.EXTEND_VOLUME, detailFor(err), job.request_id))) return;
        // The size did not change: give back what the request took.
        await deps.quotas.release(tx, v.project_id, volumeQuota(payload.newSizeGiB - v.size, await typeNameOf(deps.types, tx, v.volume_type_id), 0));
      },
    },
    delete: {
      kind: 'volume.delete', version: 1, minVersion: 1, resourceType: 'volume',
      parse: parser<DeletePayload>({ volumeId: 'string' }),
      onFailure: onFailure('deleting', MESSAGE_ACTIONS.DELETE_VOLUME),
    },
  };
}

/** The job target of a volume cluster. */
export function volumeTarget(cluster: string): string {
  return `volume:${cluster}`;
}
