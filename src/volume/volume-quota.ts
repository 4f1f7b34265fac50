/**
 * How volumes count against quotas: which resources one volume uses, and how
 * to count a project's real usage when a usage row has to be (re)built.
 */
import type { Kysely } from 'kysely';
import type { Database, VolumeRepository, VolumeTypeRepository } from '../db/index.ts';
import type { UsageCounter } from '../quota/index.ts';

/**
 * The quota `count` volumes of `sizeGiB` hold, overall and (with a type name)
 * in the type's own resources (`volumes_<type>`, `gigabytes_<type>`).
 * `count` 0 gives just gigabytes, e.g. for an extend.
 */
export function volumeQuota(sizeGiB: number, typeName?: string | null, count = 1): Record<string, number> {
  const q: Record<string, number> = { volumes: count, gigabytes: sizeGiB };
  if (typeName) {
    q[`volumes_${typeName}`] = count;
    q[`gigabytes_${typeName}`] = sizeGiB;
  }
  return q;
}

/** The name of a volume's type (null for none). */
export async function typeNameOf(types: VolumeTypeRepository, q: Kysely<Database>, typeId: string | null): Promise<string | null> {
  if (!typeId) return null;
  return (await types.byIds(q, [typeId])).get(typeId)?.name ?? null;
}

/** Per-type quota resources for every type that exists. */
export function perTypeResources(types: VolumeTypeRepository): (q: Kysely<Database>) => Promise<string[]> {
  return async (q) => (await types.names(q)).flatMap((n) => [`volumes_${n}`, `gigabytes_${n}`, `snapshots_${n}`]);
}

/** Counts real usage from the volume rows (snapshots arrive with their table). */
export function volumeUsageCounter(volumes: VolumeRepository, types: VolumeTypeRepository): UsageCounter {
  return async (q: Kysely<Database>, projectId: string, resource: string) => {
    const m = /^(volumes|gigabytes)(?:_(.+))?$/.exec(resource);
    if (!m) return 0;
    let typeId: string | undefined;
    if (m[2] !== undefined) {
      typeId = (await types.find(q, m[2], { isAdmin: true, projectId }))?.id;
      if (!typeId) return 0;
    }
    const u = await volumes.usage(q, projectId, typeId);
    return m[1] === 'volumes' ? u.count : u.gigabytes;
  };
}
