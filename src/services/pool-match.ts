/**
 * Matching a volume type's extra spec against a backend capability, with
 * Cinder's operators: `<is> True`, `<in> x`, `<or> a <or> b`, `<all-in> a b`,
 * numeric `=` (at least), `==`, `!=`, `>=`, `<=`, and string `s==`, `s!=`,
 * `s<`, `s<=`, `s>`, `s>=`. A spec without an operator must equal the
 * capability as text.
 */
import { ownValue } from '../common/index.ts';
import { replicatesInDriver, type PoolReport, type ServiceReport } from './service-report.ts';

/**
 * Basalt's extra spec choosing how a replicated type's volumes replicate:
 * `sync` or `async` (the types API checks its values: `src/volume/volume-type-flags.ts`).
 */
export const REPLICATION_MODE_SPEC = 'basalt:replication_mode';

/** Capability values render as Cinder (Python) would: `True`, `False`, numbers. */
function text(value: unknown): string {
  if (value === true) return 'True';
  if (value === false) return 'False';
  return String(value);
}

function num(s: string): number | undefined {
  const n = Number(s);
  return s.trim() !== '' && Number.isFinite(n) ? n : undefined;
}

/** Whether `capability` satisfies `requirement`. A missing capability never does. */
export function matchesSpec(capability: unknown, requirement: string): boolean {
  if (capability === undefined || capability === null) return false;
  const value = text(capability);
  const words = requirement.trim().split(/\s+/);
  const op = words[0] ?? '';
  const rest = words.slice(1).join(' ');
  const numeric = (cmp: (a: number, b: number) => boolean): boolean => {
    const a = num(value);
    const b = num(rest);
    return a !== undefined && b !== undefined && cmp(a, b);
  };
  switch (op) {
    case '<is>': return value.toLowerCase() === rest.toLowerCase();
    case '<in>': return value.includes(rest);
    case '<all-in>': return words.slice(1).every((w) => value.split(/[\s,]+/).includes(w));
    case '<or>': return words.filter((w) => w !== '<or>').some((w) => w === value);
    case '=': return numeric((a, b) => a >= b);
    case '==': return numeric((a, b) => a === b);
    case '!=': return numeric((a, b) => a !== b);
    case '>=': return numeric((a, b) => a >= b);
    case '<=': return numeric((a, b) => a <= b);
    case 's==': return value === rest;
    case 's!=': return value !== rest;
    case 's<': return value < rest;
    case 's<=': return value <= rest;
    case 's>': return value > rest;
    case 's>=': return value >= rest;
    default: return value === requirement.trim();
  }
}

/**
 * The capability name an extra spec key is about, or undefined when the key
 * does not constrain placement (scoped to something other than `capabilities`,
 * e.g. `qos:` or `RESKEY:`).
 */
export function capabilityKey(specKey: string): string | undefined {
  const i = specKey.indexOf(':');
  if (i < 0) return specKey;
  return specKey.slice(0, i) === 'capabilities' ? specKey.slice(i + 1) : undefined;
}

/**
 * The extra specs a pool does not meet (pool capabilities first, then the
 * backend's): the scheduler's capabilities filter, and the check that a
 * retype can stay where the volume is.
 */
export function unmetSpecs(caps: ServiceReport, pool: PoolReport, specs: Record<string, string>): string[] {
  const failed: string[] = [];
  for (const [key, requirement] of Object.entries(specs)) {
    const cap = capabilityKey(key);
    if (cap === undefined) continue;
    // Own members only: a spec `capabilities:constructor` names no capability.
    const value = ownValue(pool as unknown as Record<string, unknown>, cap) ?? ownValue(caps as unknown as Record<string, unknown>, cap);
    if (!matchesSpec(value, requirement)) failed.push(key);
  }
  // A backend that replicates through its own storage (rbd-mirror) copies asynchronously:
  // it cannot hold a type that asks for every write on both copies.
  if (specs[REPLICATION_MODE_SPEC]?.trim() === 'sync' && replicatesInDriver(caps)) {
    failed.push(`${REPLICATION_MODE_SPEC} (sync: this backend replicates through its storage, asynchronously)`);
  }
  return failed;
}
