/**
 * User messages: the fixed catalogue of end-user explanations for asynchronous
 * failures, served by Cinder's `/messages` API (3.3). Backend text never
 * reaches a message; only these actions and details do.
 */
import type { Clock } from '../common/index.ts';
import { isoAt, newId, newRequestId } from '../common/index.ts';
import type { Tx } from '../jobs/index.ts';
import { BackupCorruptError, InvalidInputError, NoRoomError, NoValidBackendError, type BasaltError } from '../errors/index.ts';

/** What the user was doing. Ids are stable: they form the message's event_id. */
export const MESSAGE_ACTIONS = {
  SCHEDULE_ALLOCATE_VOLUME: { id: '001', text: 'schedule allocate volume' },
  UNMANAGE_VOLUME: { id: '006', text: 'unmanage volume' },
  EXTEND_VOLUME: { id: '007', text: 'extend volume' },
  MANAGE_VOLUME: { id: '008', text: 'create volume from backend storage' },
  SNAPSHOT_CREATE: { id: '009', text: 'snapshot create' },
  SNAPSHOT_DELETE: { id: '010', text: 'snapshot delete' },
  CREATE_VOLUME: { id: '013', text: 'create volume' },
  DELETE_VOLUME: { id: '016', text: 'delete volume' },
  REVERT_VOLUME: { id: '021', text: 'revert volume to snapshot' },
  MIGRATE_VOLUME: { id: '022', text: 'migrate volume' },
  /** Cinder's 013; Basalt's 013 was taken by create volume first. */
  BACKUP_CREATE: { id: '023', text: 'create backup' },
  BACKUP_DELETE: { id: '014', text: 'delete backup' },
  BACKUP_RESTORE: { id: '015', text: 'restore backup' },
  /** Basalt's: shipping a replicated volume's points to its secondary copy (issue 16). */
  REPLICATE_VOLUME: { id: '024', text: 'replicate volume' },
  /** Basalt's: failing a backend over to its replication target. */
  FAILOVER_VOLUME: { id: '025', text: 'failover volume' },
  /** Basalt's: a volume service checking that its backend still holds each volume (`src/volume/lost-storage.ts`). */
  CHECK_VOLUME: { id: '026', text: 'check volume storage' },
} as const;

/** What went wrong. Ids are stable. */
export const MESSAGE_DETAILS = {
  UNKNOWN_ERROR: { id: '001', text: 'An unknown error occurred.' },
  NO_VALID_BACKEND: { id: '003', text: 'Could not find any available weighted backend.' },
  /** Cinder's 009: the compute side could not be told (its external events API). */
  NOTIFY_COMPUTE_SERVICE_FAILED: { id: '009', text: 'Compute service failed to extend volume.' },
  DRIVER_FAILED: { id: '010', text: 'The storage backend failed to complete the operation.' },
  BACKEND_UNAVAILABLE: { id: '011', text: 'The storage backend was unavailable; retries were exhausted.' },
  INTERRUPTED: { id: '012', text: 'The operation was interrupted and did not finish; it was stopped so the volume is not left in a transitional status.' },
  BACKUP_CORRUPT: { id: '030', text: 'The backup\'s stored data is missing or fails its checksum.' },
  INVALID_INPUT: { id: '031', text: 'The request could not be carried out as asked.' },
  /** The secondary copy is behind: the primary keeps serving, and shipping resumes by itself. */
  REPLICA_BEHIND: { id: '032', text: 'The secondary copy could not be updated (target unreachable, full or failing); the volume keeps working and replication catches up by itself.' },
  /** The secondary copy is older than its RPO allows with nothing failing (points slower than the changes, or waiting for the volume). */
  REPLICA_LAGGING: { id: '034', text: 'The secondary copy is further behind than the replication RPO allows (points ship more slowly than the volume changes); the volume keeps working and the status returns to enabled once a point ships in time.' },
  /** The backend's storage had no room for the operation (a pool full or at its quota) until retries ran out. */
  /** The volume's image or file was removed outside Basalt (`src/volume/lost-storage.ts`). */
  STORAGE_MISSING: { id: '036', text: 'The volume\'s data is no longer on the storage backend (it was removed outside Basalt); the volume can only be deleted.' },
  BACKEND_FULL: { id: '035', text: 'The storage backend has no room for it (its pool is full or at its quota); retries were exhausted.' },
  /** A failover left a volume with no copy on the target. */
  NOT_REPLICATED: { id: '033', text: 'The volume\'s backend was failed over and the volume has no copy on the target.' },
} as const;

export type MessageAction = (typeof MESSAGE_ACTIONS)[keyof typeof MESSAGE_ACTIONS];
export type MessageDetail = (typeof MESSAGE_DETAILS)[keyof typeof MESSAGE_DETAILS];

/** The detail that explains an error to a user. */
export function detailFor(err: BasaltError): MessageDetail {
  if (err instanceof NoRoomError) return MESSAGE_DETAILS.BACKEND_FULL;
  switch (err.code) {
    case 'NO_VALID_BACKEND': return MESSAGE_DETAILS.NO_VALID_BACKEND;
    case 'DRIVER_FAILED': return MESSAGE_DETAILS.DRIVER_FAILED;
    case 'BACKEND_UNAVAILABLE': return MESSAGE_DETAILS.BACKEND_UNAVAILABLE;
    case 'BACKUP_CORRUPT': return MESSAGE_DETAILS.BACKUP_CORRUPT;
    case 'INVALID_INPUT': return MESSAGE_DETAILS.INVALID_INPUT;
    case 'COMPUTE_NOTIFY_FAILED': return MESSAGE_DETAILS.NOTIFY_COMPUTE_SERVICE_FAILED;
    default: return MESSAGE_DETAILS.UNKNOWN_ERROR;
  }
}

/** Cinder's event id for an action and detail, e.g. `VOLUME_VOLUME_001_003`. */
export function eventId(resourceType: string, action: MessageAction, detail: MessageDetail): string {
  return `VOLUME_${resourceType.toUpperCase()}_${action.id}_${detail.id}`;
}

/** Renders the text users read: `action: detail`, then the detail's arguments if any. */
export function userMessageText(actionId: string, detailId: string, detailArgs?: string | null): string {
  const action = Object.values(MESSAGE_ACTIONS).find((a) => a.id === actionId);
  const detail = Object.values(MESSAGE_DETAILS).find((d) => d.id === detailId);
  const text = `${action?.text ?? 'unknown action'}: ${detail?.text ?? MESSAGE_DETAILS.UNKNOWN_ERROR.text}`;
  return detailArgs ? `${text} ${detailArgs}` : text;
}

/**
 * Arguments of the detail, for errors that carry Basalt's own safe text
 * (e.g. which filter rejected each backend). Never driver or backend output.
 */
export function detailArgsFor(err: BasaltError): string | null {
  if (err instanceof NoValidBackendError && err.rejections.length) return `Rejected: ${err.rejections.join('; ')}.`;
  // Basalt's own text naming the chunk or the input at fault (no backend output).
  if (err instanceof BackupCorruptError || err instanceof InvalidInputError) return err.message;
  return null;
}

/**
 * The detail of an event that reports a failure (`docs/events.md`): the
 * user message's text as `reason` and its Cinder event id, so a consumer of
 * the event stream or a webhook learns why without asking `/messages`. From
 * the catalogue only, as user messages are: never backend text.
 */
export function failureDetail(resourceType: string, action: MessageAction, detail: MessageDetail, detailArgs: string | null = null): { reason: string; message_event_id: string } {
  return { reason: userMessageText(action.id, detail.id, detailArgs), message_event_id: eventId(resourceType, action, detail) };
}

/** What one message records. */
export interface NewUserMessage {
  projectId: string;
  resourceType: string;
  resourceId: string | null;
  action: MessageAction;
  detail: MessageDetail;
  /** Safe arguments of the detail (see {@link detailArgsFor}). */
  detailArgs?: string | null;
  /** The request that led to it; null for work no request started (the sweeper), which gets its own id. */
  requestId: string | null;
}

/** Records a user message inside the caller's transaction; it expires after `ttlSeconds`. */
export async function recordUserMessage(tx: Tx, clock: Clock, ttlSeconds: number, m: NewUserMessage): Promise<void> {
  const now = clock.now();
  await tx.insertInto('messages').values({
    id: newId(),
    project_id: m.projectId,
    // Cinder's messages always carry a request id (a background context makes its own), and clients expect a string.
    request_id: m.requestId ?? newRequestId(),
    resource_type: m.resourceType.toUpperCase(),
    resource_uuid: m.resourceId,
    event_id: eventId(m.resourceType, m.action, m.detail),
    message_level: 'ERROR',
    action_id: m.action.id,
    detail_id: m.detail.id,
    detail_args: m.detailArgs ?? null,
    created_at: isoAt(now),
    expires_at: isoAt(now + ttlSeconds * 1000),
  }).execute();
}
