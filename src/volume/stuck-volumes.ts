/**
 * The sweeper's rules for volumes and snapshots: a row in a transitional
 * status with no queued or running job will never leave it by itself, so it is
 * moved to the matching error status with a user message saying the operation
 * was interrupted.
 */
import type { Db } from '../db/index.ts';
import { isoAt } from '../common/index.ts';
import type { SweepRule } from '../jobs/index.ts';
import { MESSAGE_DETAILS } from '../messages/index.ts';
import { failResource, SNAPSHOT_TRANSITIONAL, VOLUME_TRANSITIONAL, type VolumeJobDeps } from './volume-jobs.ts';

/** Builds the stuck-volume and stuck-snapshot rules. */
export function stuckResourceRules(db: Db, deps: VolumeJobDeps): SweepRule[] {
  return [
    {
      name: 'stuck-volumes',
      async sweep(olderThanMs) {
        let moved = 0;
        for (const v of await deps.volumes.stuck(db.kysely, Object.keys(VOLUME_TRANSITIONAL), isoAt(olderThanMs))) {
          const ok = await db.kysely.transaction().execute(async (tx) => {
            if (!(await failResource(deps, tx, { volumeId: v.id }, v.status, MESSAGE_DETAILS.INTERRUPTED, null))) return false;
            // An extend with no job left no record of how much quota it took:
            // recount the project's gigabytes from the rows.
            if (v.status === 'extending') await deps.quotas.recount(tx, v.project_id, ['gigabytes']);
            return true;
          });
          if (ok) moved++;
        }
        return moved;
      },
    },
    {
      name: 'stuck-snapshots',
      async sweep(olderThanMs) {
        let moved = 0;
        for (const s of await deps.snapshots.stuck(db.kysely, Object.keys(SNAPSHOT_TRANSITIONAL), isoAt(olderThanMs))) {
          if (await db.kysely.transaction().execute((tx) => failResource(deps, tx, { snapshotId: s.id }, s.status, MESSAGE_DETAILS.INTERRUPTED, null))) moved++;
        }
        return moved;
      },
    },
  ];
}
