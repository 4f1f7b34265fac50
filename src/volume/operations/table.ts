/**
 * The operation table: every volume and snapshot operation, one file each
 * (docs/operations.md). The status unions, the transitional statuses the
 * sweeper watches and the `os-reset_status` choices are derived from it, so a
 * status exists only when an operation declares it.
 */
import type { SnapshotRowStatus, VolumeRowStatus } from '../../db/index.ts';
import type { MessageAction } from '../../messages/index.ts';
import type { Operation, ResourceType } from './operation.ts';
import { snapshotCreate } from './snapshot-create.ts';
import { snapshotDelete } from './snapshot-delete.ts';
import { snapshotManage } from './snapshot-manage.ts';
import { snapshotUnmanage } from './snapshot-unmanage.ts';
import { volumeBeginDetaching, volumeComplete, volumeConnect, volumeDetach, volumeReserve, volumeRollDetaching } from './volume-attach.ts';
import { volumeCreate } from './volume-create.ts';
import { volumeDelete } from './volume-delete.ts';
import { volumeExtend } from './volume-extend.ts';
import { volumeManage } from './volume-manage.ts';
import { volumeUnmanage } from './volume-unmanage.ts';
import { volumeMigrate } from './volume-migrate.ts';
import { volumeRetype } from './volume-retype.ts';
import { volumeRevert } from './volume-revert.ts';
import { volumeOffer, volumeOfferSettled } from './volume-transfer.ts';

/** Every operation. Adding one: a new file in this folder, a line here, and its tests. */
export const OPERATIONS = [
  volumeCreate, volumeDelete, volumeExtend, volumeRevert, volumeRetype, volumeMigrate,
  snapshotCreate, snapshotDelete,
  volumeManage, volumeUnmanage, snapshotManage, snapshotUnmanage,
  volumeReserve, volumeConnect, volumeComplete, volumeBeginDetaching, volumeRollDetaching, volumeDetach,
  volumeOffer, volumeOfferSettled,
] as const;

/**
 * Volume statuses that no operation of this table owns: the backup jobs'
 * (`src/backup`), which set them on the volume they read or write and whose
 * own sweeper rule ends them — `backing-up` while a backup reads the volume,
 * `restoring-backup` while a restore writes it, `error_restoring` when that
 * restore failed (a delete starts from it). `maintenance` is a migration's
 * (`volume-migrate.ts`), `managing`/`error_managing` a manage's (`volume-manage.ts`).
 */
export const UNOWNED_VOLUME_STATUSES = ['error_restoring', 'backing-up', 'restoring-backup'] as const;

/** Snapshot statuses no operation of this table owns: `backing-up`, while a backup reads the snapshot (`src/backup`). */
export const UNOWNED_SNAPSHOT_STATUSES = ['backing-up'] as const;

type Ops = (typeof OPERATIONS)[number];
type Declared<O> = O extends { from: readonly (infer F)[]; transitional: infer T; to: readonly (infer U)[]; error: infer E } ? F | T | U | E : never;
type Side<R extends ResourceType> = Ops extends infer O ? O extends { side: { resource: R; transitional: infer T; error: infer E } } ? T | E : never : never;

/** Every status a volume can have, from the table. */
export type VolumeStatus = Exclude<Declared<Extract<Ops, { resource: 'volume' }>> | Side<'volume'> | (typeof UNOWNED_VOLUME_STATUSES)[number], null | 'deleted'>;
/** Every status a snapshot can have, from the table. */
export type SnapshotStatus = Exclude<Declared<Extract<Ops, { resource: 'snapshot' }>> | Side<'snapshot'> | (typeof UNOWNED_SNAPSHOT_STATUSES)[number], null | 'deleted'>;

// The row types (`src/db/schema.ts`) hold exactly these statuses: an operation that declares a new
// status, or a row status no operation owns, fails to compile here.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const volumeRowsAgree: Same<VolumeStatus, VolumeRowStatus> = true;
const snapshotRowsAgree: Same<SnapshotStatus, SnapshotRowStatus> = true;
void volumeRowsAgree;
void snapshotRowsAgree;

/**
 * Whether an admin's `os-reset_status` may set each volume status (Cinder's
 * list). A status a new operation declares fails to compile until it is
 * decided here.
 */
const VOLUME_RESETTABLE: Record<VolumeStatus, boolean> = {
  creating: true, available: true, deleting: true, error: true, error_deleting: true, error_managing: true, managing: true,
  attaching: true, 'in-use': true, detaching: true, maintenance: true, reserved: true, error_extending: true, extending: true,
  reverting: false, 'awaiting-transfer': false, error_restoring: false, unmanaging: false, error_unmanaging: false,
  'backing-up': false, 'restoring-backup': false,
};
/** Whether an admin's snapshot `os-reset_status` may set each snapshot status (Cinder's list). */
const SNAPSHOT_RESETTABLE: Record<SnapshotStatus, boolean> = {
  creating: true, available: true, deleting: true, error: true, error_deleting: true, restoring: false, unmanaging: false, error_unmanaging: false,
  'backing-up': false,
};

const allowed = <S extends string>(r: Record<S, boolean>): S[] => (Object.keys(r) as S[]).filter((s) => r[s]);
/** The statuses a volume `os-reset_status` may set, in Cinder's order. */
export const VOLUME_RESET_STATUSES: readonly VolumeStatus[] = allowed(VOLUME_RESETTABLE);
/** The statuses a snapshot `os-reset_status` may set, in Cinder's order. */
export const SNAPSHOT_RESET_STATUSES: readonly SnapshotStatus[] = allowed(SNAPSHOT_RESETTABLE);

/** A transitional status: where a failure (or the sweeper) moves it, the action users read, and its operation. */
export interface TransitionalStatus { error: string; action: MessageAction; operation: Operation }

/**
 * The transitional statuses of one resource type with the operation owning
 * each: its own (`operation.transitional`) and those it gives another row
 * (`operation.side`, a revert's `restoring` snapshot, which goes back to available).
 * @throws Error when two operations claim one transitional status with different outcomes (a table error).
 */
export function transitionalStatuses(resource: ResourceType): Record<string, TransitionalStatus> {
  const out: Record<string, TransitionalStatus> = {};
  const add = (status: string, t: TransitionalStatus): void => {
    const seen = out[status];
    if (seen && (seen.error !== t.error || seen.action !== t.action)) throw new Error(`${resource} status ${status} is transitional in both ${seen.operation.name} and ${t.operation.name}`);
    out[status] ??= t;
  };
  for (const op of OPERATIONS as readonly Operation[]) {
    if (op.resource === resource && op.transitional && op.error && op.action) add(op.transitional, { error: op.error, action: op.action, operation: op });
    if (op.side?.resource === resource && op.action) add(op.side.transitional, { error: op.side.error, action: op.action, operation: op });
  }
  return out;
}
