/**
 * The sweeper's rule for volumes: a volume in a transitional status with no
 * queued or running job will never leave it by itself, so it is moved to the
 * matching error status with a user message saying the operation was interrupted.
 */
import type { Db } from '../db/index.ts';
import { isoAt } from '../common/index.ts';
import type { SweepRule } from '../jobs/index.ts';
import { MESSAGE_DETAILS } from '../messages/index.ts';
import { failVolume, TRANSITIONAL_STATUSES, type VolumeJobDeps } from './volume-jobs.ts';

/** Builds the stuck-volume rule. */
export function stuckVolumeRule(db: Db, deps: VolumeJobDeps): SweepRule {
  return {
    name: 'stuck-volumes',
    async sweep(olderThanMs) {
      let moved = 0;
      const rows = await deps.volumes.stuck(db.kysely, Object.keys(TRANSITIONAL_STATUSES), isoAt(olderThanMs));
      for (const v of rows) {
        const t = TRANSITIONAL_STATUSES[v.status]!;
        const ok = await db.kysely.transaction().execute(async (tx) => {
          if (!(await failVolume(deps, tx, v.id, v.status, t.action, MESSAGE_DETAILS.INTERRUPTED, null))) return false;
          // An extend with no job left no record of how much quota it took:
          // recount the project's gigabytes from the volume rows.
          if (v.status === 'extending') await deps.quotas.recount(tx, v.project_id, ['gigabytes']);
          return true;
        });
        if (ok) moved++;
      }
      return moved;
    },
  };
}
