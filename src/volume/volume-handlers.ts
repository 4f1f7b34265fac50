/**
 * The handlers a volume service runs for one backend: one per operation of
 * the table with a job (`operations/`), each through the runtime's handler
 * skeleton (re-read, lock, re-read under the lock, idempotent driver work,
 * finish with the job's completion), plus the export fence.
 */
import type { Clock } from '../common/index.ts';
import type { Db, ServiceRepository, Tx, VolumeRow } from '../db/index.ts';
import type { GuardedDriver } from '../drivers/index.ts';
import type { AnyJobKind, Enqueue, JobHandler, JobQueue } from '../jobs/index.ts';
import type { Coordinator } from '../coordination/index.ts';
import type { ComputeEvents } from '../events/index.ts';
import type { KeyManager } from '../keymgr/index.ts';
import type { LifecycleDeps } from './lifecycle.ts';
import type { LiveMoves } from './live-move.ts';
import { migrateCleanupHandler, OPERATIONS, operationHandler, type Operation } from './operations/index.ts';
import type { FencePayload, VolumeJobKinds } from './volume-jobs.ts';

/**
 * What the volume service uses of its process's export server: fencing,
 * quiescing writes around in-use snapshots, and self-fencing. `closeExport`
 * and `suspend` resolve once no write of the dropped connections can reach
 * a volume.
 */
export interface ExportServer {
  closeExport(name: string): Promise<void>;
  quiesce<T>(key: string, fn: () => Promise<T>): Promise<T>;
  /** Drops every connection and refuses new ones until `resume(holder)`. */
  suspend(holder: string): Promise<void>;
  resume(holder: string): void;
  /**
   * The exports' changed-block tracker (`src/export/changed-blocks.ts`), when
   * writes are recorded. A write path that bypasses the export marks the
   * volume wholly changed here (its next incremental backup reads it all);
   * a deleted volume is forgotten.
   */
  readonly changedBlocks?: { markAllChanged(volumeId: string, reason: string): Promise<void>; forget(volumeId: string): Promise<void> } | undefined;
}

/** What the handlers need. */
export interface VolumeHandlerDeps extends LifecycleDeps {
  db: Db;
  clock: Clock;
  /** The queue (its `serviceDownMs` decides which members fence a released attachment's export). */
  queue: JobQueue;
  services: ServiceRepository;
  kinds: VolumeJobKinds;
  /** Named locks; handlers hold `volume-<id>` / `snapshot-<id>` around driver calls (see the lock inventory). */
  coordinator: Coordinator;
  lockTimeoutMs: number;
  /** Where the keys of encrypted volumes live: a deleted volume's key goes after its storage. */
  keys: KeyManager;
  /** The process's export server (the NBD server), when it exports volumes. */
  exports?: ExportServer;
  /** This process's node name (the `host` option): another process of this machine is reached through its Unix socket. */
  host?: string;
  /**
   * Ends the create of a volume made from a backup (3.47) by queueing the
   * restore instead of making it available (`src/backup/volume-from-backup.ts`).
   */
  backupRestore?: { afterCreate(tx: Tx, enqueue: Enqueue, v: VolumeRow, requestId: string | null): Promise<boolean> };
  /** The drivers of every backend this process serves, by cluster: a migration reads its source through them. */
  drivers?: ReadonlyMap<string, GuardedDriver>;
  /** Attached volumes moving in this process, served by a mirror (`live-move.ts`); present with {@link exports}. */
  moves?: LiveMoves;
  /**
   * Tells the compute side (Nova) of changes to attached volumes, when `[nova]`
   * says where it is: operations queue its deliveries as they finish, and this
   * service runs them. Absent: the compute side is told nothing.
   */
  compute?: ComputeEvents;
}

/**
 * Builds the handlers over one backend's driver: one for the main job of
 * every operation of the table that runs on a backend, and the fence.
 */
export function volumeHandlers(deps: VolumeHandlerDeps, driver: GuardedDriver): JobHandler<any>[] { // eslint-disable-line @typescript-eslint/no-explicit-any
  const { kinds } = deps;
  const byName = new Map<string, AnyJobKind>(Object.values(kinds).map((k: AnyJobKind) => [k.kind, k]));
  const fence: JobHandler<FencePayload> = {
    kind: kinds.fence,
    async run(ctx, p) {
      // Complete only once the fence is: no write of the attachment lands after it.
      await deps.exports?.closeExport(p.exportName);
      // A loop device (or a backend's own protocol) wrote the volume past the export's tracker, up to this fence.
      if (p.untracked) await deps.exports?.changedBlocks?.markAllChanged(ctx.job.resource_id, 'an attachment that wrote past the NBD export was detached');
      await ctx.complete();
    },
  };
  const operations = (OPERATIONS as readonly Operation[]).filter((op) => op.jobs?.main && op.run);
  return [
    ...operations.map((op) => {
      const kind = byName.get(op.jobs!.main.kind);
      if (!kind) throw new Error(`job kind ${op.jobs!.main.kind} of ${op.name} is not in volumeJobKinds`);
      return operationHandler(op, kind, deps, driver);
    }),
    migrateCleanupHandler(deps, driver, kinds.migrateCleanup),
    fence,
    ...(deps.compute ? [deps.compute.handler] : []),
  ];
}
