/**
 * The handlers a volume service runs for groups on one backend. Each re-reads
 * its rows first and works only on the members still in the transitional
 * status, so a run after a crash completes what is left. A group snapshot
 * holds the writes of every attached member's exports while it snapshots each
 * member, then lets them all go: the member snapshots are one point in time.
 */
import { isoAt } from '../common/index.ts';
import type { GroupRepository, GroupSnapshotRepository, SnapshotRow } from '../db/index.ts';
import type { GuardedDriver } from '../drivers/index.ts';
import type { JobHandler } from '../jobs/index.ts';
import { withLock } from '../coordination/index.ts';
import type { GroupJobKinds, GroupPayload, GroupSnapshotPayload } from './group-jobs.ts';
import { removeSnapshot, removeVolume } from './lifecycle.ts';
import { refuseIfAttached, releaseVolumeReferences } from './volume-references.ts';
import type { VolumeHandlerDeps } from './volume-handlers.ts';

/** What the group handlers need beyond the volume handlers' deps. */
export interface GroupHandlerDeps extends VolumeHandlerDeps {
  groups: GroupRepository;
  groupSnapshots: GroupSnapshotRepository;
  groupKinds: GroupJobKinds;
}

/**
 * Runs `fn` holding every named lock, taken in name order so that two
 * holders of overlapping sets cannot deadlock; each is waited for up to
 * `waitMs` (default: the deps' lock timeout). `fn` gets a signal aborted as
 * soon as any of the locks is lost (see {@link withLock}).
 */
export async function withLocks<T>(deps: Pick<VolumeHandlerDeps, 'coordinator' | 'lockTimeoutMs'>, names: string[], fn: (lost: AbortSignal) => Promise<T>, waitMs = deps.lockTimeoutMs): Promise<T> {
  const anyLost = new AbortController();
  const take = ([first, ...rest]: string[]): Promise<T> => first === undefined ? fn(anyLost.signal) : withLock(deps.coordinator, first, waitMs, (lost) => {
    if (lost.aborted) anyLost.abort(lost.reason);
    else lost.addEventListener('abort', () => anyLost.abort(lost.reason), { once: true });
    return take(rest);
  });
  return take([...names].sort());
}

/**
 * Runs `fn` with the writes of every export of the volumes `keys` held (in
 * key order, like the locks); without an export server, just runs it.
 */
export async function quiesceAll<T>(deps: Pick<VolumeHandlerDeps, 'exports'>, keys: string[], fn: () => Promise<T>): Promise<T> {
  const [first, ...rest] = [...keys].sort();
  if (first === undefined || !deps.exports) return fn();
  return deps.exports.quiesce(first, () => quiesceAll(deps, rest, fn));
}

/** Builds the handlers over one backend's driver. */
export function groupHandlers(deps: GroupHandlerDeps, driver: GuardedDriver): JobHandler<any>[] { // eslint-disable-line @typescript-eslint/no-explicit-any
  const { db, volumes, snapshots, groups, groupSnapshots, groupKinds } = deps;
  const snapRef = (s: SnapshotRow) => ({ id: s.id, volumeId: s.volume_id, sizeGiB: s.volume_size });

  const del: JobHandler<GroupPayload> = {
    kind: groupKinds.delete,
    async run(ctx, p) {
      const g = await groups.get(db.kysely, p.groupId);
      if (!g || g.status !== 'deleting') return ctx.complete();
      for (const v of await groups.members(db.kysely, g.id)) {
        if (v.status !== 'deleting') continue;
        // Destroy data last: the member's storage goes only once nothing can keep its row.
        await db.kysely.transaction().execute(async (tx) => {
          await db.lockRows(tx, 'volumes', [v.id]);
          await refuseIfAttached(tx, v.id);
        });
        await withLock(deps.coordinator, `volume-${v.id}`, deps.lockTimeoutMs, () => driver.deleteVolume({ id: v.id }));
        await db.kysely.transaction().execute(async (tx) => {
          await db.lockRows(tx, 'volumes', [v.id]);
          await releaseVolumeReferences(deps, tx, undefined, v, ctx.job.request_id);
          await removeVolume(deps, tx, v, ctx.job.request_id);
        });
      }
      await ctx.complete(async (tx) => {
        // A member still here did not reach `deleting` (reset meanwhile): the group stays, in error.
        if ((await groups.members(tx, g.id)).length > 0) {
          await groups.transition(tx, { id: g.id, from: ['deleting'], to: 'error_deleting', requestId: ctx.job.request_id });
          return;
        }
        if (await groups.deleteRow(tx, g.id, 'deleting', ctx.job.request_id)) await deps.quotas.release(tx, g.project_id, { groups: 1 });
      });
    },
  };

  const createFromSource: JobHandler<GroupPayload> = {
    kind: groupKinds.createFromSource,
    async run(ctx, p) {
      const g = await groups.get(db.kysely, p.groupId);
      if (!g || g.status !== 'creating') return ctx.complete();
      const made: string[] = [];
      for (const v of await groups.members(db.kysely, g.id)) {
        if (v.status !== 'creating') continue;
        const vol = { id: v.id, sizeGiB: v.size };
        await withLock(deps.coordinator, `volume-${v.id}`, deps.lockTimeoutMs, async () => {
          if (v.snapshot_id) await driver.createVolumeFromSnapshot(vol, snapRef((await snapshots.get(db.kysely, v.snapshot_id))!));
          else await driver.cloneVolume(vol, { id: v.source_volid!, sizeGiB: (await volumes.get(db.kysely, v.source_volid!))!.size });
        });
        made.push(v.id);
      }
      await ctx.complete(async (tx) => {
        const now = isoAt(deps.clock.now());
        for (const id of made) await volumes.transition(tx, { id, from: ['creating'], to: 'available', set: { launched_at: now }, requestId: ctx.job.request_id });
        await groups.transition(tx, { id: g.id, from: ['creating'], to: 'available', requestId: ctx.job.request_id });
      });
    },
  };

  const snapshotCreate: JobHandler<GroupSnapshotPayload> = {
    kind: groupKinds.snapshotCreate,
    async run(ctx, p) {
      const gs = await groupSnapshots.get(db.kysely, p.groupSnapshotId);
      if (!gs || gs.status !== 'creating') return ctx.complete();
      const pending = (await groupSnapshots.snapshotsOf(db.kysely, gs.id)).filter((s) => s.status === 'creating');
      const attached: string[] = [];
      for (const s of pending) {
        if ((await volumes.get(db.kysely, s.volume_id))?.attach_status === 'attached') attached.push(s.volume_id);
      }
      // Every member's writes are held for the whole group, not one volume at a time. A member
      // snapshot an interrupted run completed is of an earlier instant than the others will
      // be: it is dropped and taken again with them (a driver keeps an existing snapshot).
      await withLocks(deps, pending.map((s) => `snapshot-${s.id}`), async () => {
        for (const s of pending) await driver.deleteSnapshot({ id: s.id, volumeId: s.volume_id });
        // What is cached goes out first, while the writes still flow: the group's hold is then brief.
        await driver.flushAhead(pending.filter((s) => attached.includes(s.volume_id)).map((s) => ({ id: s.volume_id, sizeGiB: s.volume_size })));
        await quiesceAll(deps, attached, async () => {
          for (const s of pending) await driver.createSnapshot(snapRef(s));
        });
      });
      await ctx.complete(async (tx) => {
        for (const s of pending) await snapshots.transition(tx, { id: s.id, from: ['creating'], to: 'available', requestId: ctx.job.request_id });
        await groupSnapshots.transition(tx, { id: gs.id, from: ['creating'], to: 'available', requestId: ctx.job.request_id });
      });
    },
  };

  const snapshotDelete: JobHandler<GroupSnapshotPayload> = {
    kind: groupKinds.snapshotDelete,
    async run(ctx, p) {
      const gs = await groupSnapshots.get(db.kysely, p.groupSnapshotId);
      if (!gs || gs.status !== 'deleting') return ctx.complete();
      for (const s of await groupSnapshots.snapshotsOf(db.kysely, gs.id)) {
        if (s.status !== 'deleting') continue;
        await withLock(deps.coordinator, `snapshot-${s.id}`, deps.lockTimeoutMs, () => driver.deleteSnapshot({ id: s.id, volumeId: s.volume_id }));
        await db.kysely.transaction().execute((tx) => removeSnapshot(deps, tx, s, ctx.job.request_id));
      }
      await ctx.complete(async (tx) => {
        if ((await groupSnapshots.snapshotsOf(tx, gs.id)).length > 0) {
          await groupSnapshots.transition(tx, { id: gs.id, from: ['deleting'], to: 'error_deleting', requestId: ctx.job.request_id });
          return;
        }
        await groupSnapshots.deleteRow(tx, gs.id, 'deleting', ctx.job.request_id);
      });
    },
  };

  return [del, createFromSource, snapshotCreate, snapshotDelete];
}
