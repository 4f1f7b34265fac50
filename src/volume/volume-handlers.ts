/**
 * The handlers a volume service runs for one backend: one per operation of
 * the table with a job (`operations/`), each through the runtime's handler
 * skeleton (re-read, lock, re-read under the lock, idempotent driver work,
 * finish with the job's completion), plus the export fence.
 */
import type { Clock } from '../common/index.ts';
import type { Db } from '../db/index.ts';
import type { GuardedDriver } from '../drivers/index.ts';
import type { JobHandler } from '../jobs/index.ts';
import type { Coordinator } from '../coordination/index.ts';
import type { KeyManager } from '../keymgr/index.ts';
import type { LifecycleDeps } from './lifecycle.ts';
import { operationHandler, snapshotCreate, snapshotDelete, volumeCreate, volumeDelete, volumeExtend, volumeRevert } from './operations/index.ts';
import type { FencePayload, VolumeJobKinds } from './volume-jobs.ts';

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
  const { kinds } = deps;
  const fence: JobHandler<FencePayload> = {
    kind: kinds.fence,
    async run(ctx, p) {
      deps.exports?.closeExport(p.exportName);
      await ctx.complete();
    },
  };
  return [
    operationHandler(volumeCreate, kinds.create, deps, driver),
    operationHandler(volumeExtend, kinds.extend, deps, driver),
    operationHandler(volumeDelete, kinds.delete, deps, driver),
    operationHandler(volumeRevert, kinds.revert, deps, driver),
    operationHandler(snapshotCreate, kinds.snapshotCreate, deps, driver),
    operationHandler(snapshotDelete, kinds.snapshotDelete, deps, driver),
    fence,
  ];
}
