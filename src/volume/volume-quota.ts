/**
 * How volumes count against quotas: which resources one volume uses, and how
 * to count a project's real usage when a usage row has to be (re)built.
 */
import type { Kysely } from 'kysely';
import type { Database, VolumeRepository } from '../db/index.ts';
import type { UsageCounter } from '../quota/index.ts';

/** The quota a volume of `sizeGiB` holds. */
export function volumeQuota(sizeGiB: number): Record<string, number> {
  return { volumes: 1, gigabytes: sizeGiB };
}

/** Counts real usage from the volume rows (snapshots arrive with their table). */
export function volumeUsageCounter(volumes: VolumeRepository): UsageCounter {
  return async (q: Kysely<Database>, projectId: string, resource: string) => {
    if (resource === 'volumes' || resource === 'gigabytes') {
      const u = await volumes.usage(q, projectId);
      return resource === 'volumes' ? u.count : u.gigabytes;
    }
    return 0;
  };
}
