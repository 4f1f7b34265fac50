/** What a volume type's extra specs say about its volumes, read in one place. */
import type { VolumeType } from '../db/index.ts';

/** Whether a type makes its volumes multiattach (`multiattach="<is> True"`, 3.50). */
export function isMultiattachType(t: VolumeType): boolean {
  return /^<is>\s+true$/i.test((t.extra_specs.multiattach ?? '').trim());
}
