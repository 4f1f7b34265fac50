/**
 * Quotas that cannot drift. Usage is changed in the same transaction that
 * creates, resizes or removes the resource, by a conditional UPDATE that
 * refuses to go past the limit; concurrent requests therefore stop exactly at
 * the limit. A usage row that does not exist yet is first filled by counting
 * the real resources, so usage also heals itself for data older than quotas.
 *
 * Call order: {@link QuotaEngine.consume} before inserting or growing the
 * resource row; {@link QuotaEngine.release} after removing or shrinking it.
 */
import type { Kysely } from 'kysely';
import type { DefaultOptions } from '../config/index.ts';
import { last, type Database, type QuotaRepository, type UsageChange } from '../db/index.ts';
import { InvalidInputError, QuotaExceededError } from '../errors/index.ts';

type Q = Kysely<Database>;

/** Resources every project has a limit for, in Cinder's names. */
export const BASE_RESOURCES = ['volumes', 'snapshots', 'gigabytes', 'backups', 'backup_gigabytes', 'groups', 'per_volume_gigabytes'] as const;

/** A per-request cap, not a counter: checked against one volume's size. */
const PER_VOLUME = 'per_volume_gigabytes';

/** Counts how much of `resource` a project really holds now. */
export type UsageCounter = (q: Q, projectId: string, resource: string) => Promise<number>;

/** What the engine needs. */
export interface QuotaEngineDeps {
  repo: QuotaRepository;
  config: Pick<DefaultOptions, 'quota_volumes' | 'quota_snapshots' | 'quota_gigabytes' | 'quota_backups' | 'quota_backup_gigabytes' | 'quota_groups' | 'per_volume_size_limit'>;
  /** Counts any counted resource (base or per type). */
  count: UsageCounter;
  /** Per-type resource names that exist now, e.g. `volumes_gold`. Default none. */
  extraResources?: (q: Q) => Promise<string[]>;
}

/** One resource in a quota report: Cinder's keys (no `allocated`: that came with nested quotas, gone from Cinder). */
export interface QuotaDetail { limit: number; in_use: number; reserved: number }

/** Limits and usage. */
export class QuotaEngine {
  constructor(private readonly deps: QuotaEngineDeps) {}

  /** Every resource a quota may be set for now. */
  async resources(q: Q): Promise<string[]> {
    return [...BASE_RESOURCES, ...(await this.deps.extraResources?.(q) ?? [])];
  }

  /** Configured defaults overridden by the `default` quota class. */
  async defaults(q: Q): Promise<Record<string, number>> {
    return this.classLimits(q, 'default');
  }

  /** A class's limits: configured defaults, overridden by the class's rows. */
  async classLimits(q: Q, className: string): Promise<Record<string, number>> {
    const out = this.configured(await this.resources(q));
    const defaults = className === 'default' ? {} : await this.deps.repo.classLimits(q, 'default');
    return { ...out, ...pick(defaults, out), ...pick(await this.deps.repo.classLimits(q, className), out) };
  }

  /** The configured limits of `resources` (per-type quotas default to unlimited, as in Cinder). */
  private configured(resources: readonly string[]): Record<string, number> {
    const c = this.deps.config;
    const base: Record<string, number> = {
      volumes: c.quota_volumes, snapshots: c.quota_snapshots, gigabytes: c.quota_gigabytes, backups: c.quota_backups,
      backup_gigabytes: c.quota_backup_gigabytes, groups: c.quota_groups, per_volume_gigabytes: c.per_volume_size_limit,
    };
    return Object.fromEntries(resources.map((r) => [r, base[r] ?? -1]));
  }

  /**
   * The project's limits of just `resources` (all known to exist): what
   * {@link limits} gives for them, without listing every type to build the rest.
   */
  private async limitsOf(q: Q, projectId: string, resources: readonly string[]): Promise<Record<string, number>> {
    const out = this.configured(resources);
    return { ...out, ...pick(await this.deps.repo.classLimits(q, 'default'), out), ...pick(await this.deps.repo.projectLimits(q, projectId), out) };
  }

  /** A project's limits: defaults, overridden by its own rows. */
  async limits(q: Q, projectId: string): Promise<Record<string, number>> {
    const defaults = await this.defaults(q);
    return { ...defaults, ...pick(await this.deps.repo.projectLimits(q, projectId), defaults) };
  }

  /** What a project uses now, per counted resource. */
  async usage(q: Q, projectId: string): Promise<Record<string, number>> {
    const rows = await this.deps.repo.usages(q, projectId);
    const out: Record<string, number> = {};
    for (const r of await this.resources(q)) {
      if (r === PER_VOLUME) continue;
      out[r] = rows[r] ?? await this.deps.count(q, projectId, r);
    }
    return out;
  }

  /** Limits with usage, as `os-quota-sets?usage=true` shows them. */
  async details(q: Q, projectId: string): Promise<Record<string, QuotaDetail>> {
    const [limits, usage] = [await this.limits(q, projectId), await this.usage(q, projectId)];
    return Object.fromEntries(Object.entries(limits).map(([r, limit]) => [r, { limit, in_use: usage[r] ?? 0, reserved: 0 }]));
  }

  /**
   * Takes `deltas` (resource → amount) out of the project's quota, inside `tx`,
   * before the resource row is written. `volumeSizeGiB`, when given, is checked
   * against `per_volume_gigabytes`.
   * @throws QuotaExceededError naming the resource (the caller's transaction rolls back).
   */
  async consume(tx: Q, projectId: string, deltas: Record<string, number>, volumeSizeGiB?: number): Promise<void> {
    const limits = await this.limitsOf(tx, projectId, [...Object.keys(deltas), PER_VOLUME]);
    const perVolume = limits[PER_VOLUME] ?? -1;
    if (volumeSizeGiB !== undefined && perVolume >= 0 && volumeSizeGiB > perVolume) {
      throw new QuotaExceededError(`VolumeSizeExceedsLimit: Requested volume size ${volumeSizeGiB}G is larger than maximum allowed limit ${perVolume}G.`);
    }
    // A usage row is counted from the resources only when it does not exist yet: counting is an
    // aggregate over every volume of the project, which no create should pay once the row is there.
    const rows = await this.deps.repo.usages(tx, projectId);
    const changes = Object.entries(deltas).filter(([, delta]) => delta !== 0).map(([resource, delta]) => ({ resource, delta, limit: limits[resource] ?? -1 }));
    for (const c of changes) {
      if (rows[c.resource] !== undefined) continue;
      const counted = await this.deps.count(tx, projectId, c.resource);
      await this.deps.repo.ensureUsage(tx, projectId, c.resource, counted);
      rows[c.resource] = counted;
    }
    // Refused now when the usage read says so, before the rest of the request does anything (a key
    // made for an encrypted volume, say); the UPDATE that decides goes last (last-steps.ts).
    const over = changes.find((c) => c.delta > 0 && c.limit >= 0 && (rows[c.resource] ?? 0) + c.delta > c.limit);
    if (over) throw exceeded(over.resource, over.delta, over.limit, rows[over.resource] ?? 0);
    await last(tx, async () => {
      const refused = await this.deps.repo.addUsages(tx, projectId, changes);
      if (refused.length === 0) return;
      const first = changes.find((c) => c.resource === refused[0])!;
      throw exceeded(first.resource, first.delta, first.limit, (await this.deps.repo.usages(tx, projectId))[first.resource] ?? 0);
    });
  }

  /**
   * Gives `deltas` back, inside `tx`, after the resource row was removed or
   * shrunk. A usage row that did not exist is counted afresh instead.
   */
  async release(tx: Q, projectId: string, deltas: Record<string, number>): Promise<void> {
    const rows = await this.deps.repo.usages(tx, projectId);
    const given: UsageChange[] = [];
    for (const [resource, delta] of Object.entries(deltas)) {
      if (delta === 0) continue;
      if (rows[resource] === undefined) await this.deps.repo.ensureUsage(tx, projectId, resource, await this.deps.count(tx, projectId, resource));
      else given.push({ resource, delta: -delta, limit: -1 });
    }
    if (given.length > 0) await last(tx, async () => { await this.deps.repo.addUsages(tx, projectId, given); });
  }

  /** Drops a project's own limits: it falls back to the defaults. */
  async reset(q: Q, projectId: string): Promise<void> {
    await this.deps.repo.deleteProjectLimits(q, projectId);
  }

  /**
   * Rebuilds usage rows from the real resources. Only for paths that lost the
   * record of a change (a resource stuck with no job); normal paths use
   * consume/release.
   */
  async recount(tx: Q, projectId: string, resources: readonly string[]): Promise<void> {
    await this.deps.repo.deleteUsages(tx, projectId, resources);
    for (const r of resources) await this.deps.repo.ensureUsage(tx, projectId, r, await this.deps.count(tx, projectId, r));
  }

  /**
   * Validates and stores new limits for a project (`class` null) or a class.
   * @throws InvalidInputError for an unknown resource, a value that is not an
   *   integer ≥ -1, or a project limit below what the project already uses.
   */
  async set(q: Q, target: { projectId: string } | { className: string }, values: Record<string, unknown>): Promise<void> {
    const valid = new Set(await this.resources(q));
    const bad = Object.keys(values).filter((k) => !valid.has(k));
    if (bad.length) throw new InvalidInputError(`Bad key(s) in quota set: ${bad.join(', ')}`);
    const limits: Record<string, number> = {};
    for (const [k, v] of Object.entries(values)) {
      const n = typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? Number(v) : v;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < -1 || n > 2147483647) {
        throw new InvalidInputError(`Invalid input for field/attribute ${k}. Value: ${String(v)}. must be an integer greater than or equal to -1`);
      }
      limits[k] = n;
    }
    if ('projectId' in target) {
      const usage = await this.usage(q, target.projectId);
      for (const [k, n] of Object.entries(limits)) {
        if (n >= 0 && (usage[k] ?? 0) > n) {
          throw new InvalidInputError(`Invalid input received: Quota limit ${n} for ${k} must be equal or greater than existing resources. Current usage is ${usage[k]}.`);
        }
      }
      await this.deps.repo.setProjectLimits(q, target.projectId, limits);
    } else {
      await this.deps.repo.setClassLimits(q, target.className, limits);
    }
  }
}

function pick(from: Record<string, number>, known: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(from).filter(([k]) => Object.hasOwn(known, k)));
}

function exceeded(resource: string, delta: number, limit: number, inUse: number): QuotaExceededError {
  if (resource === 'volumes' || resource.startsWith('volumes_')) {
    return new QuotaExceededError(`VolumeLimitExceeded: Maximum number of volumes allowed (${limit}) exceeded for quota '${resource}'.`);
  }
  if (resource === 'snapshots' || resource.startsWith('snapshots_')) {
    return new QuotaExceededError(`SnapshotLimitExceeded: Maximum number of snapshots allowed (${limit}) exceeded for quota '${resource}'.`);
  }
  if (resource === 'gigabytes' || resource.startsWith('gigabytes_')) {
    return new QuotaExceededError(`VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed ${resource} quota. Requested ${delta}G, quota is ${limit}G and ${inUse}G has been consumed.`);
  }
  return new QuotaExceededError(`Quota exceeded for resources: ['${resource}']`);
}
