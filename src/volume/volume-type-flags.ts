/** What a volume type's extra specs say about its volumes, read in one place. */
import type { VolumeType } from '../db/index.ts';
import { REPLICATION_MODE_SPEC } from '../services/index.ts';

export { REPLICATION_MODE_SPEC };

/** Whether a type makes its volumes multiattach (`multiattach="<is> True"`, 3.50). */
export function isMultiattachType(t: VolumeType): boolean {
  return /^<is>\s+true$/i.test((t.extra_specs.multiattach ?? '').trim());
}

/** How a replicated type's volumes are replicated (`replication_enabled='<is> True'` and Basalt's own specs). */
export interface ReplicationSettings {
  /** `sync`: a write is acknowledged once both copies have it; `async`: points shipped at an interval. */
  readonly mode: 'sync' | 'async';
  /** Asynchronous: the longest time between two shipped points (the RPO). */
  readonly rpoSeconds: number;
}

/** Basalt's extra spec giving the asynchronous RPO in seconds (default {@link DEFAULT_RPO_SECONDS}). */
export const REPLICATION_RPO_SPEC = 'basalt:replication_rpo_seconds';
/** Basalt's extra spec choosing rbd-mirror's mode on an RBD backend that replicates through Ceph: `snapshot` (default) or `journal`. */
export const RBD_MIRROR_MODE_SPEC = 'basalt:rbd_mirror_mode';
/** The RPO of an asynchronous type that names none: five minutes, a common default of array replication. */
export const DEFAULT_RPO_SECONDS = 300;
/** The longest RPO a type may ask for: a day. */
const MAX_RPO_SECONDS = 86_400;

/**
 * Why a type's replication specs are wrong, naming the spec, or undefined
 * when they are right (absent ones included). The types API refuses such
 * specs with a 400, so {@link replicationOf} never meets them.
 */
export function replicationSpecProblem(specs: Readonly<Record<string, string>>): string | undefined {
  const enabled = specs.replication_enabled;
  if (enabled !== undefined && !/^<is>\s+(true|false)$/i.test(enabled.trim())) {
    return `extra spec replication_enabled must be '<is> True' or '<is> False', not '${enabled}'`;
  }
  const mode = specs[REPLICATION_MODE_SPEC];
  if (mode !== undefined && !['sync', 'async'].includes(mode.trim())) return `extra spec ${REPLICATION_MODE_SPEC} must be sync or async, not '${mode}'`;
  const mirror = specs[RBD_MIRROR_MODE_SPEC];
  if (mirror !== undefined && !['snapshot', 'journal'].includes(mirror.trim())) return `extra spec ${RBD_MIRROR_MODE_SPEC} must be snapshot or journal, not '${mirror}'`;
  const rpo = specs[REPLICATION_RPO_SPEC];
  if (rpo !== undefined && !(/^\d+$/.test(rpo.trim()) && Number(rpo) >= 1 && Number(rpo) <= MAX_RPO_SECONDS)) {
    return `extra spec ${REPLICATION_RPO_SPEC} must be a whole number of seconds from 1 to ${MAX_RPO_SECONDS}, not '${rpo}'`;
  }
  return undefined;
}

/** How a type's volumes are replicated, or undefined when they are not (`replication_enabled` absent or not `<is> True`). */
export function replicationOf(t: Pick<VolumeType, 'extra_specs'>): ReplicationSettings | undefined {
  if (!/^<is>\s+true$/i.test((t.extra_specs.replication_enabled ?? '').trim())) return undefined;
  const mode = t.extra_specs[REPLICATION_MODE_SPEC]?.trim() === 'sync' ? 'sync' : 'async';
  const rpo = Number(t.extra_specs[REPLICATION_RPO_SPEC] ?? DEFAULT_RPO_SECONDS);
  return { mode, rpoSeconds: Number.isInteger(rpo) && rpo >= 1 ? rpo : DEFAULT_RPO_SECONDS };
}
