/**
 * The job kinds of the volume and snapshot lifecycle, known to every role,
 * built from the operation table (`operations/`): each kind's `onFailure`
 * moves the resource from its operation's transitional status to its error
 * status, records a user message and runs the operation's `undo`, all in the
 * failing transaction.
 */
import type { Clock } from '../common/index.ts';
import type { SnapshotRepository, VolumeRepository, VolumeTypeRepository } from '../db/index.ts';
import type { JobKind, Tx } from '../jobs/index.ts';
import type { QuotaEngine } from '../quota/index.ts';
import type { MessageDetail } from '../messages/index.ts';
import {
  failRow, operationJobKind, payloadParser, snapshotCreate, snapshotDelete, transitionalStatuses, volumeCreate, volumeDelete, volumeExtend, volumeMigrate, volumeRevert,
  type CreatePayload, type DeletePayload, type ExtendPayload, type MigrateCleanupPayload, type MigratePayload, type RevertPayload, type SchedulePayload,
  type SnapshotPayload, type TransitionalStatus,
} from './operations/index.ts';
import {
  snapshotManage, snapshotUnmanage, volumeManage, volumeUnmanage, type ManagePayload, type ManageSnapshotPayload, type UnmanagePayload,
} from './operations/index.ts';

export type { CreatePayload, DeletePayload, ExtendPayload, MigrateCleanupPayload, MigratePayload, RevertPayload, SchedulePayload, SnapshotPayload, TransitionalStatus };

/**
 * `export.fence` (target: one member, or the volume's cluster when no member
 * was live): drop that member's connections of a deleted attachment's export
 * (`export-fence.ts`). Its resource is the volume, whose later jobs wait for it.
 */
export interface FencePayload {
  exportName: string;
  /**
   * The attachment wrote the volume without the NBD export (a loop device, a
   * backend's own protocol): the fencing member marks the volume wholly
   * changed for incremental backups. Absent (release N-1's payloads): false.
   */
  untracked?: boolean;
}

/** Every kind, built over the deps their failure handling needs. */
export interface VolumeJobKinds {
  schedule: JobKind<SchedulePayload>;
  create: JobKind<CreatePayload>;
  extend: JobKind<ExtendPayload>;
  delete: JobKind<DeletePayload>;
  revert: JobKind<RevertPayload>;
  migrate: JobKind<MigratePayload>;
  migrateCleanup: JobKind<MigrateCleanupPayload>;
  snapshotCreate: JobKind<SnapshotPayload>;
  snapshotDelete: JobKind<SnapshotPayload>;
  manage: JobKind<ManagePayload>;
  unmanage: JobKind<UnmanagePayload>;
  snapshotManage: JobKind<ManageSnapshotPayload>;
  snapshotUnmanage: JobKind<SnapshotPayload>;
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

/** Transitional statuses of volumes, from the operation table. */
export const VOLUME_TRANSITIONAL: Record<string, TransitionalStatus> = transitionalStatuses('volume');

/** Transitional statuses of snapshots (`restoring` is the snapshot side of a revert), from the operation table. */
export const SNAPSHOT_TRANSITIONAL: Record<string, TransitionalStatus> = transitionalStatuses('snapshot');

/** What to fail: a volume or a snapshot. */
export type FailTarget = { volumeId: string } | { snapshotId: string };

/**
 * Moves a volume or snapshot from the transitional status `from` to its error
 * status (as the operation table declares it) and records a user message.
 * Returns false when the row was not in `from` (someone else settled it).
 */
export async function failResource(
  deps: VolumeJobDeps, tx: Tx, target: FailTarget, from: string, detail: MessageDetail, requestId: string | null,
  detailArgs: string | null = null,
): Promise<boolean> {
  const resource = 'volumeId' in target ? 'volume' : 'snapshot';
  const status = (resource === 'volume' ? VOLUME_TRANSITIONAL : SNAPSHOT_TRANSITIONAL)[from]!;
  return failRow(deps, tx, resource, 'volumeId' in target ? target.volumeId : target.snapshotId, from, status, detail, requestId, detailArgs);
}

/** Builds the job kinds. */
export function volumeJobKinds(deps: VolumeJobDeps): VolumeJobKinds {
  return {
    schedule: operationJobKind(volumeCreate, volumeCreate.jobs.schedule, deps),
    create: operationJobKind(volumeCreate, volumeCreate.jobs.main, deps),
    extend: operationJobKind(volumeExtend, volumeExtend.jobs.main, deps),
    delete: operationJobKind(volumeDelete, volumeDelete.jobs.main, deps),
    revert: operationJobKind(volumeRevert, volumeRevert.jobs.main, deps),
    migrate: operationJobKind(volumeMigrate, volumeMigrate.jobs.main, deps),
    migrateCleanup: {
      ...volumeMigrate.jobs.cleanup, resourceType: 'volume',
      // The row has settled already (moved, or back where it was): a copy left behind is only space, never the volume's data.
      async onFailure() { /* nothing to mark */ },
    },
    snapshotCreate: operationJobKind(snapshotCreate, snapshotCreate.jobs.main, deps),
    snapshotDelete: operationJobKind(snapshotDelete, snapshotDelete.jobs.main, deps),
    manage: operationJobKind(volumeManage, volumeManage.jobs.main, deps),
    unmanage: operationJobKind(volumeUnmanage, volumeUnmanage.jobs.main, deps),
    snapshotManage: operationJobKind(snapshotManage, snapshotManage.jobs.main, deps),
    snapshotUnmanage: operationJobKind(snapshotUnmanage, snapshotUnmanage.jobs.main, deps),
    fence: {
      kind: 'export.fence', version: 1, minVersion: 1, resourceType: 'attachment', holdsLaterJobs: true,
      parse: payloadParser<FencePayload>({ exportName: 'string' }),
      // The attachment row is already gone, so the export name no longer
      // resolves: new connections are refused whatever happens to this job.
      async onFailure() { /* nothing to mark */ },
    },
  };
}

/** Job targets live with the service report (src/services); re-exported for the volume roles. */
export { memberTarget, volumeTarget } from '../services/index.ts';
