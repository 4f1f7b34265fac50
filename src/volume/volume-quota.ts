/**
 * How volumes count against quotas: which resources one volume uses, and how
 * to count a project's real usage when a usage row has to be (re)built.
 */
import type { Kysely } from 'kysely';
import type { Database, SnapshotRepository, VolumeRepository, VolumeTypeRepository } from '../db/index.ts';
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

/** The quota a snapshot of a `sizeGiB` volume holds (snapshot gigabytes count in `gigabytes`, as in Cinder). */
export function snapshotQuota(sizeGiB: number, typeName?: string | null): Record<string, number> {
  const q: Record<string, number> = { snapshots: 1, gigabytes: sizeGiB };
  if (typeName) {
    q[`snapshots_${typeName}`] = 1;
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

/** Counts real usage from the volume and snapshot rows. */
export function volumeUsageCounter(volumes: VolumeRepository, snapshots: SnapshotRepository, types: VolumeTypeRepository): UsageCounter {
  return async (q: Kysely<Database>, projectId: string, resource: string) => {
    const m = /^(volumes|snapshots|gigabytes)(?:_(.+))?$/.exec(resource);
    if (!m) return 0;
    let typeId: string | undefined;
    if (m[2] !== undefined) {
      typeId = (await types.find(q, m[2], { isAdmin: true, projectId }))?.id;
      if (!typeId) return 0;
    }
    const v = await volumes.usage(q, projectId, typeId);
    const s = await snapshots.usage(q, projectId, typeId);
    return m[1] === 'volumes' ? v.count : m[1] === 'snapshots' ? s.count : v.gigabytes + s.gigabytes;
  };
}
