/**
 * The handlers a volume service runs for one backend. Each re-reads its rows
 * first and is idempotent: run again after a crash, it completes the same step.
 */
import type { Clock } from '../common/index.ts';
import { isoAt } from '../common/index.ts';
import type { Db } from '../db/index.ts';
import type { GuardedDriver, SnapshotRef } from '../drivers/index.ts';
import type { JobHandler } from '../jobs/index.ts';
import { withLock, type Coordinator } from '../coordination/index.ts';
import type { KeyManager } from '../keymgr/index.ts';
import { removeSnapshot, removeVolume, type LifecycleDeps } from './lifecycle.ts';
import { refuseIfAttached, releaseVolumeReferences } from './volume-references.ts';
import type { CreatePayload, DeletePayload, ExtendPayload, FencePayload, RevertPayload, SnapshotPayload, VolumeJobKinds } from './volume-jobs.ts';

/** What the handlers need. */
export interface VolumeHandlerDeps extends LifecycleDeps {
  db: Db;
  clock: Clock;
  kinds: VolumeJobKinds;
  /** Named locks; handlers hold `volume-<id>` / `snapshot-<id>` around driver calls (see the lock inventory). */
  coordinator: Coordinator;
  lockTimeoutMs: number;
  /** Where the keys of encrypted volumes live: a deleted volume's key goes after its storage. */
  keys: KeyManager;
  /** The process's export server, for fencing and for quiescing writes around in-use snapshots. */
  exports?: { closeExport(name: string): void; quiesce<T>(key: string, fn: () => Promise<T>): Promise<T> };
}

/** Builds the handlers over one backend's driver. */
export function volumeHandlers(deps: VolumeHandlerDeps, driver: GuardedDriver): JobHandler<any>[] { // eslint-disable-line @typescript-eslint/no-explicit-any
  const { volumes, snapshots, kinds, db } = deps;
  const locked = <T>(name: string, fn: () => Promise<T>): Promise<T> => withLock(deps.coordinator, name, deps.lockTimeoutMs, fn);
  const snapRef = (s: { id: string; volume_id: string; volume_size: number }): SnapshotRef => ({ id: s.id, volumeId: s.volume_id, sizeGiB: s.volume_size });

  const create: JobHandler<CreatePayload> = {
    kind: kinds.create,
    async run(ctx, p) {
      const v = await volumes.get(db.kysely, p.volumeId);
      if (!v || v.status !== 'creating') return ctx.complete(); // deleted or settled meanwhile
      const vol = { id: v.id, sizeGiB: p.sizeGiB };
      const made = await locked(`volume-${v.id}`, async () => {
        // Read again under the lock: a forced delete may have removed the volume meanwhile,
        // and making its storage now would leak it.
        if ((await volumes.get(db.kysely, v.id))?.status !== 'creating') return false;
        if (v.snapshot_id) {
          const s = (await snapshots.get(db.kysely, v.snapshot_id))!;
          await driver.createVolumeFromSnapshot(vol, snapRef(s));
        } else if (v.source_volid) {
          const src = (await volumes.get(db.kysely, v.source_volid))!;
          await driver.cloneVolume(vol, { id: src.id, sizeGiB: src.size });
        } else {
          await driver.createVolume(vol);
        }
        return true;
      });
      if (!made) return ctx.complete();
      await ctx.complete(async (tx) => {
        await volumes.transition(tx, { id: v.id, from: ['creating'], to: 'available', set: { launched_at: isoAt(deps.clock.now()) }, requestId: ctx.job.request_id });
      });
    },
  };

  const extend: JobHandler<ExtendPayload> = {
    kind: kinds.extend,
    async run(ctx, p) {
      const v = await volumes.get(db.kysely, p.volumeId);
      if (!v || v.status !== 'extending') return ctx.complete();
      await locked(`volume-${v.id}`, () => driver.extendVolume({ id: v.id, sizeGiB: v.size }, p.newSizeGiB));
      await ctx.complete(async (tx) => {
        // An in-use volume (3.42) goes back to in-use: its attachments are still there.
        await db.lockRows(tx, 'volumes', [v.id]);
        const attached = await tx.selectFrom('attachments').select('id').where('volume_id', '=', v.id).executeTakeFirst();
        await volumes.transition(tx, { id: v.id, from: ['extending'], to: attached ? 'in-use' : 'available', set: { size: p.newSizeGiB }, requestId: ctx.job.request_id });
      });
    },
  };

  const del: JobHandler<DeletePayload> = {
    kind: kinds.delete,
    async run(ctx, p) {
      const v = await volumes.get(db.kysely, p.volumeId);
      if (!v || v.status !== 'deleting') return ctx.complete();
      // Destroy data last: storage goes only once nothing can keep the row
      // (an admin's reset may have let the delete through past an attachment).
      const removable = await db.kysely.transaction().execute(async (tx) => {
        await db.lockRows(tx, 'volumes', [v.id]);
        if ((await volumes.get(tx, v.id))?.status !== 'deleting') return false;
        await refuseIfAttached(tx, v.id);
        return true;
      });
      if (!removable) return ctx.complete();
      // Cascade: v2 names the snapshots deleted with the volume; a v1 payload
      // (release N-1) means those moved to deleting with it.
      for (const s of await snapshots.ofVolume(db.kysely, v.id)) {
        if (s.status !== 'deleting' || (p.snapshotIds && !p.snapshotIds.includes(s.id))) continue;
        await locked(`snapshot-${s.id}`, () => driver.deleteSnapshot({ id: s.id }));
        await db.kysely.transaction().execute((tx) => removeSnapshot(deps, tx, s, ctx.job.request_id));
      }
      await locked(`volume-${v.id}`, () => driver.deleteVolume({ id: v.id }));
      // Idempotent: a key already deleted counts as deleted when the job runs again.
      if (v.encryption_key_id) await deps.keys.deleteKey({ projectId: v.project_id }, v.encryption_key_id);
      await ctx.complete(async (tx, enqueue) => {
        await db.lockRows(tx, 'volumes', [v.id]);
        await releaseVolumeReferences(deps, tx, enqueue, v, ctx.job.request_id);
        await removeVolume(deps, tx, v, ctx.job.request_id);
      });
    },
  };

  const revert: JobHandler<RevertPayload> = {
    kind: kinds.revert,
    async run(ctx, p) {
      const v = await volumes.get(db.kysely, p.volumeId);
      const s = await snapshots.get(db.kysely, p.snapshotId);
      if (!v || !s || v.status !== 'reverting') return ctx.complete();
      await locked(`volume-${v.id}`, () => driver.revertToSnapshot({ id: v.id, sizeGiB: v.size }, snapRef(s)));
      await ctx.complete(async (tx) => {
        await volumes.transition(tx, { id: v.id, from: ['reverting'], to: 'available', requestId: ctx.job.request_id });
        await snapshots.transition(tx, { id: s.id, from: ['restoring'], to: 'available', requestId: ctx.job.request_id });
      });
    },
  };

  const snapshotCreate: JobHandler<SnapshotPayload> = {
    kind: kinds.snapshotCreate,
    async run(ctx, p) {
      const s = await snapshots.get(db.kysely, p.snapshotId);
      if (!s || s.status !== 'creating') return ctx.complete();
      const v = await volumes.get(db.kysely, s.volume_id);
      // An attached volume is snapshotted with its writes paused at the export (crash-consistent).
      const made = await locked(`snapshot-${s.id}`, async () => {
        // Read again under the lock, as for volumes: a forced delete may have come first.
        if ((await snapshots.get(db.kysely, s.id))?.status !== 'creating') return false;
        if (v && v.attach_status === 'attached' && deps.exports) await deps.exports.quiesce(v.id, () => driver.createSnapshot(snapRef(s)));
        else await driver.createSnapshot(snapRef(s));
        return true;
      });
      if (!made) return ctx.complete();
      await ctx.complete(async (tx) => {
        await snapshots.transition(tx, { id: s.id, from: ['creating'], to: 'available', requestId: ctx.job.request_id });
      });
    },
  };

  const snapshotDelete: JobHandler<SnapshotPayload> = {
    kind: kinds.snapshotDelete,
    async run(ctx, p) {
      const s = await snapshots.get(db.kysely, p.snapshotId);
      if (!s || s.status !== 'deleting') return ctx.complete();
      await locked(`snapshot-${s.id}`, () => driver.deleteSnapshot({ id: s.id }));
      await ctx.complete((tx) => removeSnapshot(deps, tx, s, ctx.job.request_id));
    },
  };

  const fence: JobHandler<FencePayload> = {
    kind: kinds.fence,
    async run(ctx, p) {
      deps.exports?.closeExport(p.exportName);
      await ctx.complete();
    },
  };

  return [create, extend, del, revert, snapshotCreate, snapshotDelete, fence];
}
