/**
 * What one resource operation declares (see docs/operations.md): the statuses
 * it starts from, its transitional, final and error statuses, the action its
 * user messages name, its job payloads with their versions, the lock its driver
 * work holds, and its steps — `request` (checks, quota, payload, inside the
 * API's transaction), `run` (the idempotent driver work, in the volume
 * service), `finish` (the last database change, atomic with the job's end) and
 * `undo` (what a failure gives back). The runtime (`runtime.ts`) does the rest
 * alike for every operation.
 *
 * Three shapes:
 * - `change`: changes an existing volume or snapshot (delete, extend, revert, retype…);
 *   the runtime locks its row, checks its status and busy/frozen rules, and
 *   moves it to the transitional status by compare-and-swap.
 * - `create`: makes a new row in the transitional status (volume create,
 *   snapshot create); its request step checks the source and inserts the row.
 * - `status`: a status change with no job (attach side, transfers); the
 *   managers that own it move the row with {@link Operation.from} and `to`.
 */
import type { Caller } from '../../common/index.ts';
import type { SnapshotRow, Tx, VolumeRow } from '../../db/index.ts';
import type { GuardedDriver } from '../../drivers/index.ts';
import type { BasaltError } from '../../errors/index.ts';
import type { Enqueue, JobContext } from '../../jobs/index.ts';
import type { MessageAction } from '../../messages/index.ts';
import type { VolumeManager, VolumeManagerDeps } from '../volume-manager.ts';
import type { VolumeHandlerDeps } from '../volume-handlers.ts';
import type { VolumeJobDeps } from '../volume-jobs.ts';

/** The resources operations change. */
export type ResourceType = 'volume' | 'snapshot';

/** The row of a resource type. */
export type RowOf<R extends ResourceType> = R extends 'volume' ? VolumeRow : SnapshotRow;

/**
 * One job kind of an operation: its stable name and payload versions. The
 * rolling-upgrade test pins names and versions: change them only with a new
 * version that the previous release's readers are pinned to (docs/upgrades.md).
 */
export interface PayloadSchema<P> {
  /** Stable name, e.g. `volume.extend`. */
  readonly kind: string;
  /** The version this code writes. */
  readonly version: number;
  /** The oldest version this code still reads (N-1). */
  readonly minVersion: number;
  /** Validates a stored payload of `version` and upgrades it. @throws Error when it cannot. */
  parse(payload: unknown, version: number): P;
  /** Writes `payload` as an older `version`. Default: unchanged. */
  encode?(payload: P, version: number): unknown;
  /** The action a failure of this kind names, when not the operation's (a create's scheduling step). */
  readonly action?: MessageAction;
}

/** Given to `request` steps: the API's transaction and the look-ups of the volume manager. */
export interface RequestContext {
  readonly tx: Tx;
  readonly caller: Caller;
  readonly enqueue: Enqueue;
  readonly deps: VolumeManagerDeps;
  /** Look-ups and shared refusals (type, zone, frozen, capacity, where a snapshot runs). */
  readonly look: VolumeManager;
}

/** What a `request` step of a change asks the runtime to do after its checks. */
export interface ChangeRequest<P, Row> {
  /** The job to queue (absent: the change takes effect at once, e.g. retype). */
  job?: { payload: P; target: string };
  /** Other columns set by the same compare-and-swap. */
  set?: Partial<Row>;
  /** The status to set when the operation has no transitional status. Default: unchanged. */
  to?: string;
  /** Runs after the compare-and-swap, in the same transaction (a delete with nothing on a backend removes the row at once). */
  after?: () => Promise<void>;
}

/** Given to `run`: the volume service's driver and deps, and the job. */
export interface RunContext {
  readonly deps: VolumeHandlerDeps;
  readonly driver: GuardedDriver;
  readonly job: JobContext;
  /** Runs `fn` holding a named lock (`volume-<id>`, `snapshot-<id>`); `fn` gets the lock's loss (see `lost`). */
  locked<T>(name: string, fn: (lost: AbortSignal) => Promise<T>): Promise<T>;
  /**
   * Aborted when the operation's own lock is lost while `run` runs (an etcd
   * lease not renewed, a PostgreSQL session ended): a long step (a copy)
   * stops at its next chunk. The job runs `run` again (idempotent).
   */
  readonly lost: AbortSignal;
}

/** Given to `finish`: the transaction that also marks the job done. */
export interface FinishContext {
  readonly tx: Tx;
  readonly enqueue: Enqueue;
  readonly deps: VolumeHandlerDeps;
  readonly requestId: string | null;
}

/** Given to `undo`: the transaction that fails the job (or the sweeper's). */
export interface UndoContext {
  readonly tx: Tx;
  readonly deps: VolumeJobDeps;
  readonly requestId: string | null;
  /** The job's error; absent when the sweeper found the row stuck with no job. */
  readonly error?: BasaltError;
}

/** A status another row takes while the operation runs (a revert's snapshot is `restoring`). */
export interface SideStatus {
  readonly resource: ResourceType;
  readonly transitional: string;
  /** Where the sweeper or a failure puts it back. */
  readonly error: string;
}

/** What every shape declares. */
interface OperationBase<R extends ResourceType, P> {
  /** The operation's name, e.g. `volume.extend` (also its main job kind's). */
  readonly name: string;
  readonly resource: R;
  /** Statuses the resource may be in when the request is made. */
  readonly from: readonly string[];
  /** The status while the work runs; null for a change that takes effect at once. */
  readonly transitional: string | null;
  /** Statuses the resource ends in when the operation succeeds (`deleted` for removal). */
  readonly to: readonly string[];
  /** The status a failure leaves it in; null when there is no job to fail. */
  readonly error: string | null;
  /** The action its user messages name (Cinder's message actions). */
  readonly action: MessageAction | null;
  readonly side?: SideStatus;
  /** The job kinds it writes, the main one (run by `run`) under `main`. */
  readonly jobs?: { readonly main: PayloadSchema<P> } & Readonly<Record<string, PayloadSchema<any>>>; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** The coordinator lock its driver work holds: `volume` (`volume-<id>`) or `snapshot` (`snapshot-<id>`). */
  readonly lock?: ResourceType;
  /**
   * Whether a row found in {@link transitional} with no job is this
   * operation's, for the sweeper to fail. Default: always. A status an admin
   * may also set (`maintenance`) is the operation's only with its mark.
   */
  stuckWhen?(row: RowOf<R>): boolean;
  /** The row the main job works on. Default: `volumeId` or `snapshotId` of the payload. */
  resourceId?(payload: P): string;
  /**
   * Before the driver work, in a transaction with the volume's row locked and
   * the status re-read: the last checks that must hold for the work to be safe
   * (a delete makes sure the row can go before its storage does).
   * @throws to fail the job with the resource's data untouched.
   */
  prepare?(tx: Tx, row: RowOf<R>, payload: P, deps: VolumeHandlerDeps): Promise<void>;
  /** The driver work. Idempotent: it may run again after a crash. Runs holding {@link lock}. */
  run?(ctx: RunContext, row: RowOf<R>, payload: P): Promise<void>;
  /** The last database change, in the transaction that completes the job. */
  finish?(ctx: FinishContext, row: RowOf<R>, payload: P): Promise<void>;
  /**
   * After a failure has moved the resource to its error status: gives back
   * what the request took. `payload` is absent when the sweeper found the row
   * stuck with no job.
   */
  undo?(ctx: UndoContext, row: RowOf<R>, payload: P | undefined): Promise<void>;
}

/** An operation on an existing volume or snapshot. */
export interface ChangeOperation<R extends ResourceType = ResourceType, P = any, I = any> extends OperationBase<R, P> { // eslint-disable-line @typescript-eslint/no-explicit-any
  readonly shape: 'change';
  /** What the request checks after the status: `writing` (default) or `reading` busy rules, or none. */
  readonly busy?: 'writing' | 'reading' | 'none';
  /** Whether a frozen backend refuses it. Default true. */
  readonly refusedWhenFrozen?: boolean;
  /**
   * The statuses this request may start from. Default {@link from}; e.g. a
   * forced delete starts from any. May throw to refuse a request whose input
   * is wrong whatever the status (a revert to another volume's snapshot).
   */
  startsFrom?(ctx: RequestContext, row: RowOf<R>, input: I): Promise<readonly string[]> | readonly string[];
  /** The refusal of a request in another status (Cinder's wording). */
  refusal(row: RowOf<R>, allowed: readonly string[], input: I): string;
  /** Checks after the status and before the busy and frozen rules. */
  check?(ctx: RequestContext, row: RowOf<R>, input: I): Promise<void>;
  /** Quota, rows and payload, after every check. */
  request?(ctx: RequestContext, row: RowOf<R>, input: I): Promise<ChangeRequest<P, RowOf<R>> | void>;
}

/** An operation that makes a new row in its transitional status. */
export interface CreateOperation<R extends ResourceType = ResourceType, P = any, I = any> extends OperationBase<R, P> { // eslint-disable-line @typescript-eslint/no-explicit-any
  readonly shape: 'create';
  /**
   * Checks the source, takes quota, inserts the row and says which job to
   * queue; it may give back the row it inserted, with its type's name, so that
   * the answer to the request is built without reading them again.
   */
  request(ctx: RequestContext, id: string, input: I): Promise<{
    job: { schema: PayloadSchema<any>; payload: unknown; target: string }; // eslint-disable-line @typescript-eslint/no-explicit-any
    created?: Created<R>;
  }>;
}

/** A row a create inserted, as its request step knows it. */
export interface Created<R extends ResourceType> { row: RowOf<R>; typeName: string | null }

/** A status change with no job, made by the manager that owns it. */
export interface StatusOperation<R extends ResourceType = ResourceType> extends OperationBase<R, never> {
  readonly shape: 'status';
}

/** Any operation of the table. */
export type Operation = ChangeOperation | CreateOperation | StatusOperation;

/**
 * Declares an operation on resource `R` with payload `P` and request input
 * `I`, keeping its statuses as literal types (the table derives its status
 * unions from them): `operation<'volume', ExtendPayload, ExtendInput>().change({…})`.
 */
export function operation<R extends ResourceType, P = never, I = void>() {
  return {
    change: <const O extends ChangeOperation<R, P, I>>(op: O & { shape: 'change' }): O => op,
    create: <const O extends CreateOperation<R, P, I>>(op: O & { shape: 'create' }): O => op,
    status: <const O extends StatusOperation<R>>(op: O & { shape: 'status' }): O => op,
  };
}

/** A payload parser checking field types, for the versions given. */
export function payloadParser<P>(fields: Record<string, 'string' | 'number'>, versions: readonly number[] = [1]): (payload: unknown, version: number) => P {
  return (payload: unknown, version: number): P => {
    if (!versions.includes(version)) throw new Error(`payload version ${version} is not readable`);
    if (payload === null || typeof payload !== 'object') throw new Error('payload must be an object');
    for (const [name, type] of Object.entries(fields)) {
      if (typeof (payload as Record<string, unknown>)[name] !== type) throw new Error(`payload field ${name} must be a ${type}`);
    }
    return payload as P;
  };
}
