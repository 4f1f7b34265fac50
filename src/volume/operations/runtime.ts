/**
 * The runtime of the operation table: what every operation gets alike.
 *
 * - Request ({@link OperationRuntime}): one transaction of the API; the row
 *   locked (`SELECT … FOR UPDATE` of the volume's row, a snapshot's volume's
 *   row), its status checked against the statuses the operation starts from,
 *   the operation's own checks, the busy and frozen rules, its request step
 *   (quota, payload), one compare-and-swap to the transitional status, and its
 *   job queued — all or nothing.
 * - Run ({@link operationHandler}): the handler skeleton of the volume
 *   service. Re-read the row and stop if it settled meanwhile; take the
 *   operation's lock; re-read under the lock (a forced delete may have come
 *   first) and run the operation's `prepare` there; the idempotent driver
 *   work; then `finish` in the transaction that completes the job.
 * - Failure ({@link operationJobKind}): a failed job moves the row from its
 *   transitional status to its error status with a user message naming the
 *   operation's action, and `undo` gives back what the request took — in the
 *   transaction that fails the job.
 * - Sweeper ({@link stuckResourceRules} in `stuck-volumes.ts`): a row left in a
 *   transitional status with no job is failed the same way (`undo` without payload).
 */
import type { Caller } from '../../common/index.ts';
import { newId } from '../../common/index.ts';
import type { SnapshotRow, Transition, Tx, VolumeRow } from '../../db/index.ts';
import type { GuardedDriver } from '../../drivers/index.ts';
import { InvalidStatusError } from '../../errors/index.ts';
import type { AnyJobKind, JobHandler, JobKind } from '../../jobs/index.ts';
import { withLock } from '../../coordination/index.ts';
import { detailArgsFor, detailFor, failureDetail, recordUserMessage, type MessageAction, type MessageDetail } from '../../messages/index.ts';
import type { VolumeManager, VolumeManagerDeps } from '../volume-manager.ts';
import type { VolumeHandlerDeps } from '../volume-handlers.ts';
import type { VolumeJobDeps } from '../volume-jobs.ts';
import type { ChangeOperation, Created, CreateOperation, Operation, PayloadSchema, RequestContext, ResourceType, RowOf } from './operation.ts';

type AnyOperation = Operation;
/** The repository of an operation's rows, as the runtime uses it: statuses are the row type's own. */
type Repo<R extends ResourceType> = { get(q: Tx, id: string): Promise<RowOf<R> | undefined>; transition(q: Tx, t: Transition<RowOf<R>>): Promise<boolean> };

function repoOf<R extends ResourceType>(deps: { volumes: unknown; snapshots: unknown }, resource: R): Repo<R> {
  return (resource === 'volume' ? deps.volumes : deps.snapshots) as Repo<R>;
}

/**
 * A status an operation declares, as its row type's status. Operations
 * declare plain strings (the row types' unions are derived from them), and
 * `table.ts` checks at compile time that the two are the same set: this is
 * the one place the runtime relies on that.
 */
function statusOf<R extends ResourceType>(status: string): RowOf<R>['status'] {
  return status as RowOf<R>['status'];
}

/** The row id a job's payload names. */
function resourceIdOf(op: AnyOperation, payload: unknown): string {
  if (op.resourceId) return op.resourceId(payload as never);
  const p = payload as { volumeId?: string; snapshotId?: string };
  return (op.resource === 'volume' ? p.volumeId : p.snapshotId)!;
}

/**
 * Moves a row from its transitional status `from` to `error` and records a
 * user message naming `action` (its text is the status event's reason). Returns false when the row was not in `from`
 * (someone else settled it).
 */
export async function failRow(
  deps: VolumeJobDeps, tx: Tx, resource: ResourceType, id: string, from: string, to: { error: string; action: MessageAction },
  detail: MessageDetail, requestId: string | null, detailArgs: string | null = null,
): Promise<boolean> {
  const repo = repoOf(deps, resource);
  const row = await repo.get(tx, id);
  const why = failureDetail(resource, to.action, detail, detailArgs);
  if (!row || !(await repo.transition(tx, { id, from: [statusOf(from)], to: statusOf(to.error), requestId, detail: why }))) return false;
  await recordUserMessage(tx, deps.clock, deps.messageTtlSeconds, {
    projectId: row.project_id, resourceType: resource, resourceId: id, action: to.action, detail, detailArgs, requestId,
  });
  return true;
}

/**
 * The job kind of one of an operation's payloads: its failure moves the row
 * from the operation's transitional status to its error status (with the
 * payload's own action, if it has one), then runs the operation's `undo`.
 */
export function operationJobKind<P>(op: AnyOperation, schema: PayloadSchema<P>, deps: VolumeJobDeps): JobKind<P> {
  return {
    kind: schema.kind, version: schema.version, minVersion: schema.minVersion, resourceType: op.resource,
    parse: (payload, version) => schema.parse(payload, version),
    ...(schema.encode ? { encode: (payload: P, version: number) => schema.encode!(payload, version) } : {}),
    async onFailure(tx, payload, job, err) {
      const id = resourceIdOf(op, payload);
      const row = await repoOf(deps, op.resource).get(tx, id);
      if (!row || !op.transitional || !op.error) return;
      const failed = await failRow(deps, tx, op.resource, id, op.transitional, { error: op.error, action: (schema.action ?? op.action)! },
        detailFor(err), job.request_id, detailArgsFor(err));
      if (failed) await op.undo?.({ tx, deps, requestId: job.request_id, error: err }, row as never, payload as never);
    },
  };
}

/**
 * The volume service's handler of an operation's main job: the skeleton
 * described at the top of this file around the operation's `prepare`, `run`
 * and `finish`.
 */
export function operationHandler<P>(op: AnyOperation, kind: JobKind<P>, deps: VolumeHandlerDeps, driver: GuardedDriver): JobHandler<P> {
  const repo = repoOf(deps, op.resource);
  const locked = <T>(name: string, fn: (lost: AbortSignal) => Promise<T>): Promise<T> => withLock(deps.coordinator, name, deps.lockTimeoutMs, fn);
  return {
    kind,
    async run(ctx, payload) {
      const id = resourceIdOf(op, payload);
      // A snapshot's lock is its volume's: read the snapshot to name it. A
      // volume's lock is named by its id, and the row is read under it only.
      let volumeId = id;
      if (op.resource === 'snapshot') {
        const snap = await repo.get(deps.db.kysely, id) as SnapshotRow | undefined;
        if (!snap || snap.status !== op.transitional) return ctx.complete(); // deleted or settled meanwhile
        volumeId = snap.volume_id;
      }
      const lockName = `${op.lock ?? op.resource}-${op.lock === 'volume' ? volumeId : id}`;
      const row = await locked(lockName, async (lost) => {
        // Read (again) under the lock: a forced delete (or an admin's reset)
        // may have come first, and touching storage now would leak or destroy it.
        const now = op.prepare
          ? await deps.db.kysely.transaction().execute(async (tx) => {
            await deps.db.lockRows(tx, 'volumes', [volumeId]);
            const now = await repo.get(tx, id);
            if (now?.status !== op.transitional) return undefined;
            await op.prepare!(tx, now as never, payload as never, deps);
            return now;
          })
          : await repo.get(deps.db.kysely, id);
        if (now?.status !== op.transitional) return undefined; // deleted or settled meanwhile
        await op.run?.({ deps, driver, job: ctx, locked, lost }, now as never, payload as never);
        return now;
      });
      if (!row) return ctx.complete();
      await ctx.complete((tx, enqueue) => op.finish?.({ tx, enqueue, deps, requestId: ctx.job.request_id }, row as never, payload as never) ?? Promise.resolve());
    },
  };
}

/** The API side of the table: requests run in one transaction each. */
export class OperationRuntime {
  constructor(private readonly deps: VolumeManagerDeps, private readonly look: VolumeManager) {}

  /** The registered job kind of a payload schema (built with its failure handling by `volumeJobKinds`). */
  private kindOf(schema: PayloadSchema<unknown>): AnyJobKind {
    const kind = Object.values(this.deps.kinds as unknown as Record<string, AnyJobKind>).find((k) => k.kind === schema.kind);
    if (!kind) throw new Error(`job kind ${schema.kind} is not registered`);
    return kind;
  }

  /**
   * Requests a change of an existing row: lock, status, the operation's
   * checks, busy and frozen rules, its request step, compare-and-swap, enqueue.
   * @throws NotFoundError, InvalidStatusError (status, busy, changed concurrently), and whatever the operation's steps throw.
   */
  async change<R extends ResourceType, P, I>(op: ChangeOperation<R, P, I>, caller: Caller, id: string, input: I): Promise<void> {
    await this.deps.queue.transaction(async (tx, enqueue) => {
      const ctx: RequestContext = { tx, caller, enqueue, deps: this.deps, look: this.look };
      const row = (op.resource === 'volume' ? await this.look.lockVolume(caller, id, tx) : await this.look.lockSnapshot(caller, id, tx)) as RowOf<R>;
      const allowed = op.startsFrom ? await op.startsFrom(ctx, row, input) : op.from;
      if (!allowed.includes(row.status)) throw new InvalidStatusError(op.refusal(row, allowed, input));
      await op.check?.(ctx, row, input);
      const volume: VolumeRow = op.resource === 'volume' ? row as VolumeRow : (await this.deps.volumes.get(tx, (row as SnapshotRow).volume_id))!;
      if ((op.busy ?? 'writing') !== 'none') await this.look.refuseIfBusy(tx, volume.id, { reading: op.busy === 'reading' });
      if (op.refusedWhenFrozen ?? true) await this.look.refuseIfFrozen(tx, volume);
      const asked = (await op.request?.(ctx, row, input)) ?? {};
      const to = op.transitional ?? asked.to ?? row.status;
      if (!(await repoOf(this.deps, op.resource).transition(tx, { id: row.id, from: allowed.map(statusOf<R>), to: statusOf<R>(to), requestId: caller.requestId, ...(asked.set ? { set: asked.set } : {}) }))) {
        throw new InvalidStatusError(`Invalid ${op.resource}: ${op.resource === 'volume' ? 'Volume' : 'Snapshot'} ${row.id} status changed concurrently; try again.`);
      }
      if (asked.job) {
        await enqueue(this.kindOf(op.jobs!.main as PayloadSchema<unknown>), { target: asked.job.target, resourceId: row.id, requestId: caller.requestId, payload: asked.job.payload });
      }
      await asked.after?.();
    });
  }

  /**
   * Requests a new row: the operation's request step checks its source, takes
   * quota and inserts the row in its transitional status; its job is queued in
   * the same transaction. Returns the new row's id, and the row as inserted
   * when the request step gave it.
   * @throws whatever the operation's request step throws.
   */
  async create<R extends ResourceType, P, I>(op: CreateOperation<R, P, I>, caller: Caller, input: I): Promise<{ id: string; created?: Created<R> }> {
    const id = newId();
    const created = await this.deps.queue.transaction(async (tx, enqueue) => {
      const { job, created } = await op.request({ tx, caller, enqueue, deps: this.deps, look: this.look }, id, input);
      await enqueue(this.kindOf(job.schema), { target: job.target, resourceId: id, requestId: caller.requestId, payload: job.payload });
      return created;
    });
    return created ? { id, created } : { id };
  }
}
