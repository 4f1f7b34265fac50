/**
 * The backup job kinds and what their failures do. Kinds are known to every
 * role, so any process's sweeper can fail a backup job; the handlers that do
 * the work are the backup service's (`backup-service.ts`).
 *
 * | kind | target | backup status | the volume (or snapshot) meanwhile | failure |
 * | --- | --- | --- | --- | --- |
 * | `backup.create` v1 | `backup:<cluster>`, or `backup-member:<host@backend>` for an attached volume | `creating` → `available` | volume `backing-up` (snapshot `backing-up` for a backup of a snapshot), back to `available`/`in-use` | backup `error`, volume back |
 * | `backup.restore` v1 | `backup:<cluster of the volume written>` | `restoring` → `available` | volume `restoring-backup` → `available` | backup `available`, volume `error_restoring` |
 * | `backup.delete` v1 | `backup` (any backup service) | `deleting` → row removed | — | backup `error_deleting` |
 * | `backup.import` v1 | `backup` | `creating` → `available` once its manifest is found whole | — | backup `error` |
 *
 * Each failure records a user message on the backup (Cinder's actions
 * create/delete/restore backup) and sets its `fail_reason` to the same text.
 */
import type { Clock } from '../common/index.ts';
import { clearProgress, type BackupRow, type BackupRowRepository, type SnapshotRepository, type Tx, type VolumeRepository } from '../db/index.ts';
import type { BasaltError } from '../errors/index.ts';
import type { JobKind } from '../jobs/index.ts';
import { detailArgsFor, detailFor, failureDetail, MESSAGE_ACTIONS, recordUserMessage, type MessageAction, type MessageDetail } from '../messages/index.ts';

/** `backup.create`: back a volume (or one of its snapshots) up. */
export interface BackupCreatePayload {
  backupId: string;
  /**
   * Ids the job gives the temporary copies it reads instead of the volume
   * (a snapshot of an attached volume, a volume made from a snapshot), chosen
   * by the request so that a run after a crash finds and removes what an
   * earlier run left.
   */
  tempSnapshotId: string;
  tempVolumeId: string;
}

/** `backup.restore`: write a backup onto a volume. */
export interface BackupRestorePayload {
  backupId: string;
  volumeId: string;
  /** The volume was made for this restore and reads as zeros: zero chunks are not written. */
  zeroed: boolean;
}

/** `backup.delete`: remove a backup's manifest and the chunks no other backup names. */
export interface BackupDeletePayload { backupId: string }

/** `backup.import`: check that the manifest an imported backup record names is stored. */
export interface BackupImportPayload { backupId: string }

/** The id a backup's manifest is stored under in the backup repository (see `service_metadata`). */
export function dataIdOf(b: Pick<BackupRow, 'id' | 'service_metadata'>): string {
  return b.service_metadata ?? b.id;
}

/** The backup job kinds. */
export interface BackupJobKinds {
  create: JobKind<BackupCreatePayload>;
  restore: JobKind<BackupRestorePayload>;
  delete: JobKind<BackupDeletePayload>;
  import: JobKind<BackupImportPayload>;
}

/** What failure handling needs. */
export interface BackupJobDeps {
  backups: BackupRowRepository;
  volumes: VolumeRepository;
  snapshots: SnapshotRepository;
  clock: Clock;
  messageTtlSeconds: number;
}

/** Each transitional backup status: where a failure moves it, and the action users read. */
export const BACKUP_TRANSITIONAL: Record<'creating' | 'restoring' | 'deleting', { error: BackupRow['status']; action: MessageAction }> = {
  creating: { error: 'error', action: MESSAGE_ACTIONS.BACKUP_CREATE },
  restoring: { error: 'available', action: MESSAGE_ACTIONS.BACKUP_RESTORE },
  deleting: { error: 'error_deleting', action: MESSAGE_ACTIONS.BACKUP_DELETE },
};

/** The statuses an admin's `os-reset_status` may set on a backup (Cinder's). */
export const BACKUP_RESET_STATUSES = ['available', 'error'] as const;

/** The status a volume goes back to once a backup of it stops reading it. */
export function settledStatus(v: { attach_status: string }): 'in-use' | 'available' {
  return v.attach_status === 'attached' ? 'in-use' : 'available';
}

const isString = (x: unknown): x is string => typeof x === 'string';

function parser<P>(check: (p: Record<string, unknown>) => boolean, what: string) {
  return (payload: unknown, version: number): P => {
    if (version !== 1) throw new Error(`payload version ${version} is not readable`);
    if (!payload || typeof payload !== 'object' || !check(payload as Record<string, unknown>)) throw new Error(`payload must name ${what}`);
    return payload as P;
  };
}

/**
 * Gives back what a backup's create held: its volume leaves `backing-up` (to
 * `in-use` when attached, else `available`), its snapshot `backing-up` — unless
 * another backup of them is still being taken.
 */
export async function releaseSource(deps: BackupJobDeps, tx: Tx, b: BackupRow, requestId: string | null): Promise<void> {
  const others = await tx.selectFrom('backups').select('id').where('volume_id', '=', b.volume_id).where('status', '=', 'creating').where('id', '!=', b.id)
    .where((eb) => b.snapshot_id ? eb('snapshot_id', '=', b.snapshot_id) : eb('snapshot_id', 'is', null)).execute();
  if (others.length) return;
  if (b.snapshot_id) {
    await deps.snapshots.transition(tx, { id: b.snapshot_id, from: ['backing-up'], to: 'available', requestId });
    return;
  }
  const v = await deps.volumes.get(tx, b.volume_id);
  if (v) await deps.volumes.transition(tx, { id: v.id, from: ['backing-up'], to: settledStatus(v), requestId });
}

/**
 * Moves a backup from a transitional status to its error status, records the
 * user message and `fail_reason`, and gives back what the job held (the
 * volume or snapshot it read, the volume it wrote: `error_restoring`).
 * Returns false when the backup was not in `from`.
 */
export async function failBackup(
  deps: BackupJobDeps, tx: Tx, id: string, from: keyof typeof BACKUP_TRANSITIONAL, detail: MessageDetail, detailArgs: string | null, requestId: string | null,
): Promise<boolean> {
  const b = await deps.backups.get(tx, id);
  if (!b) return false;
  const { error, action } = BACKUP_TRANSITIONAL[from];
  const why = failureDetail('backup', action, detail, detailArgs);
  if (!(await deps.backups.transition(tx, { id, from: [from], to: error, requestId, set: { fail_reason: why.reason.slice(0, 255), restore_volume_id: null }, detail: why }))) return false;
  await clearProgress(tx, id);
  await recordUserMessage(tx, deps.clock, deps.messageTtlSeconds, { projectId: b.project_id, resourceType: 'backup', resourceId: id, action, detail, detailArgs, requestId });
  if (from === 'creating') await releaseSource(deps, tx, b, requestId);
  if (from === 'restoring' && b.restore_volume_id) {
    await deps.volumes.transition(tx, { id: b.restore_volume_id, from: ['restoring-backup'], to: 'error_restoring', requestId, detail: failureDetail('volume', action, detail, detailArgs) });
  }
  return true;
}

/** Builds the backup job kinds. */
export function backupJobKinds(deps: BackupJobDeps): BackupJobKinds {
  const onFailure = (from: keyof typeof BACKUP_TRANSITIONAL) => async (tx: Tx, p: { backupId: string }, job: { request_id: string | null }, err: BasaltError): Promise<void> => {
    await failBackup(deps, tx, p.backupId, from, detailFor(err), detailArgsFor(err), job.request_id);
  };
  return {
    create: {
      kind: 'backup.create', version: 1, minVersion: 1, resourceType: 'backup',
      parse: parser<BackupCreatePayload>((p) => [p.backupId, p.tempSnapshotId, p.tempVolumeId].every(isString), 'backupId, tempSnapshotId and tempVolumeId'),
      onFailure: onFailure('creating'),
    },
    restore: {
      kind: 'backup.restore', version: 1, minVersion: 1, resourceType: 'backup',
      parse: parser<BackupRestorePayload>((p) => isString(p.backupId) && isString(p.volumeId) && typeof p.zeroed === 'boolean', 'backupId, volumeId and zeroed'),
      onFailure: onFailure('restoring'),
    },
    delete: {
      kind: 'backup.delete', version: 1, minVersion: 1, resourceType: 'backup',
      parse: parser<BackupDeletePayload>((p) => isString(p.backupId), 'backupId'),
      onFailure: onFailure('deleting'),
    },
    import: {
      kind: 'backup.import', version: 1, minVersion: 1, resourceType: 'backup',
      parse: parser<BackupImportPayload>((p) => isString(p.backupId), 'backupId'),
      onFailure: onFailure('creating'),
    },
  };
}
