/**
 * The sweeper's rules for volumes and snapshots, from the operation table: a
 * row in a transitional status with no queued or running job will never leave
 * it by itself, so it is moved to its operation's error status with a user
 * message saying the operation was interrupted, and the operation's `undo`
 * runs without a payload (an extend recounts the project's gigabytes).
 */
import type { Db, Tx } from '../db/index.ts';
import { isoAt } from '../common/index.ts';
import type { SweepRule } from '../jobs/index.ts';
import { MESSAGE_DETAILS } from '../messages/index.ts';
import { failRow, type ResourceType } from './operations/index.ts';
import { SNAPSHOT_TRANSITIONAL, VOLUME_TRANSITIONAL, type VolumeJobDeps } from './volume-jobs.ts';

/** Builds the stuck-volume and stuck-snapshot rules. */
export function stuckResourceRules(db: Db, deps: VolumeJobDeps): SweepRule[] {
  const rule = (name: string, resource: ResourceType): SweepRule => {
    const table = resource === 'volume' ? VOLUME_TRANSITIONAL : SNAPSHOT_TRANSITIONAL;
    const repo = resource === 'volume' ? deps.volumes : deps.snapshots;
    return {
      name,
      async sweep(olderThanMs) {
        let moved = 0;
        for (const row of await repo.stuck(db.kysely, Object.keys(table), isoAt(olderThanMs))) {
          const status = table[row.status]!;
          if (status.operation.stuckWhen && !status.operation.stuckWhen(row as never)) continue;
          const ok = await db.kysely.transaction().execute(async (tx: Tx) => {
            if (!(await failRow(deps, tx, resource, row.id, row.status, status, MESSAGE_DETAILS.INTERRUPTED, null))) return false;
            // Only the operation's own row is undone; a side row (a revert's snapshot) is swept by its own rule.
            if (status.operation.resource === resource && status.operation.transitional === row.status) {
              await status.operation.undo?.({ tx, deps, requestId: null }, row as never, undefined);
            }
            return true;
          });
          if (ok) moved++;
        }
        return moved;
      },
    };
  };
  return [rule('stuck-volumes', 'volume'), rule('stuck-snapshots', 'snapshot')];
}
