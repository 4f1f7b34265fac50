/**
 * Queries on `quotas`, `quota_classes` and `quota_usages`. Usage changes are
 * single conditional UPDATEs: `in_use + delta <= limit` is checked by the same
 * statement that applies it, so concurrent consumers cannot overshoot.
 */
import { sql, type Kysely } from 'kysely';
import type { Clock } from '../common/index.ts';
import { isoAt } from '../common/index.ts';
import type { Database } from './schema.ts';
import { CatalogueMemo } from './catalogue-memo.ts';
import { prepared, preparedShapes } from './prepared.ts';

type Q = Kysely<Database>;

// The reads every create and delete makes (prepared.ts).
const PROJECT_LIMITS = prepared<{ projectId: string }>()((q, a) =>
  q.selectFrom('quotas').select(['resource', 'hard_limit']).where('project_id', '=', a('projectId')));
const CLASS_LIMITS = prepared<{ className: string }>()((q, a) =>
  q.selectFrom('quota_classes').select(['resource', 'hard_limit']).where('class_name', '=', a('className')));
const USAGES = prepared<{ projectId: string }>()((q, a) =>
  q.selectFrom('quota_usages').select(['resource', 'in_use']).where('project_id', '=', a('projectId')));

type UsageArgs = Record<string, string | number>;
/** The usage UPDATE of {@link QuotaRepository.addUsages}, per shape. */
const usageUpdate = preparedShapes<UsageArgs, unknown>();

/** Repository over quota tables. */
export class QuotaRepository {
  /** @param memo where the limits read are kept; share one with the other catalogue repositories (catalogue-memo.ts). */
  constructor(private readonly clock: Clock, private readonly memo = new CatalogueMemo()) {}

  /** A project's explicit limits: resource → hard limit (frozen: shared by every caller). */
  projectLimits(q: Q, projectId: string): Promise<Readonly<Record<string, number>>> {
    return this.memo.read(q, `quotas\0${projectId}`, async () => {
      const rows = await PROJECT_LIMITS.all(q, { projectId });
      return Object.fromEntries(rows.map((r) => [r.resource, Number(r.hard_limit)]));
    });
  }

  /** A quota class's limits (frozen: shared by every caller). */
  classLimits(q: Q, className: string): Promise<Readonly<Record<string, number>>> {
    return this.memo.read(q, `quota class\0${className}`, async () => {
      const rows = await CLASS_LIMITS.all(q, { className });
      return Object.fromEntries(rows.map((r) => [r.resource, Number(r.hard_limit)]));
    });
  }

  /** Sets project limits (upsert per resource). */
  async setProjectLimits(q: Q, projectId: string, limits: Record<string, number>): Promise<void> {
    this.memo.changed(q);
    const now = isoAt(this.clock.now());
    for (const [resource, hard_limit] of Object.entries(limits)) {
      await q.insertInto('quotas').values({ project_id: projectId, resource, hard_limit, updated_at: now })
        .onConflict((oc) => oc.columns(['project_id', 'resource']).doUpdateSet({ hard_limit, updated_at: now })).execute();
    }
  }

  /** Removes a project's explicit limits (back to class defaults). */
  async deleteProjectLimits(q: Q, projectId: string): Promise<void> {
    this.memo.changed(q);
    await q.deleteFrom('quotas').where('project_id', '=', projectId).execute();
  }

  /** Sets class limits (upsert per resource). */
  async setClassLimits(q: Q, className: string, limits: Record<string, number>): Promise<void> {
    this.memo.changed(q);
    const now = isoAt(this.clock.now());
    for (const [resource, hard_limit] of Object.entries(limits)) {
      await q.insertInto('quota_classes').values({ class_name: className, resource, hard_limit, updated_at: now })
        .onConflict((oc) => oc.columns(['class_name', 'resource']).doUpdateSet({ hard_limit, updated_at: now })).execute();
    }
  }

  /** A project's usage rows: resource → in use. Missing rows mean "not counted yet". */
  async usages(q: Q, projectId: string): Promise<Record<string, number>> {
    const rows = await USAGES.all(q, { projectId });
    return Object.fromEntries(rows.map((r) => [r.resource, Number(r.in_use)]));
  }

  /** Deletes usage rows (to be recounted). */
  async deleteUsages(q: Q, projectId: string, resources: readonly string[]): Promise<void> {
    if (resources.length === 0) return;
    await q.deleteFrom('quota_usages').where('project_id', '=', projectId).where('resource', 'in', resources).execute();
  }

  /** Creates a usage row with `inUse` unless one exists. */
  async ensureUsage(q: Q, projectId: string, resource: string, inUse: number): Promise<void> {
    await q.insertInto('quota_usages').values({ project_id: projectId, resource, in_use: inUse, updated_at: isoAt(this.clock.now()) })
      .onConflict((oc) => oc.columns(['project_id', 'resource']).doNothing()).execute();
  }

  /**
   * Applies every change in one UPDATE: adds each `delta` to its resource's
   * usage where the result stays within its `limit` (-1: no limit; negative
   * deltas always apply, never below zero). Returns the resources whose row
   * was not updated (over the limit, or no row): when any is, the caller
   * fails and its transaction rolls the others back. One statement instead
   * of one per resource: a volume create changes four usages, and each
   * statement cost as much again in query building as in SQLite (bench/api profile).
   */
  async addUsages(q: Q, projectId: string, changes: readonly UsageChange[]): Promise<string[]> {
    const live = changes.filter((c) => c.delta !== 0);
    if (live.length === 0) return [];
    const limitedAt = (c: UsageChange) => c.delta > 0 && c.limit >= 0;
    const args: UsageArgs = { projectId, at: isoAt(this.clock.now()) };
    live.forEach((c, i) => Object.assign(args, { [`r${i}`]: c.resource, [`d${i}`]: c.delta, [`l${i}`]: c.limit }));
    // One prepared statement per shape: how many changes, which give back, which are limited.
    const shape = live.map((c) => (c.delta >= 0 ? '+' : '-') + (limitedAt(c) ? 'L' : '')).join('');
    const r = await usageUpdate(shape, (k, arg) => {
      const a = arg as (name: string) => never;
      const value = (c: UsageChange, i: number) => (c.delta >= 0 ? sql`in_use + ${a(`d${i}`)}` : sql`case when in_use + ${a(`d${i}`)} < 0 then 0 else in_use + ${a(`d${i}`)} end`);
      // CASE rather than max()/greatest(): the same SQL on SQLite and PostgreSQL.
      const inUse = sql<number>`case ${sql.join(live.map((c, i) => sql`when resource = ${a(`r${i}`)} then ${value(c, i)}`), sql` `)} else in_use end`;
      const limited = live.map((c, i) => [c, i] as const).filter(([c]) => limitedAt(c));
      let u = k.updateTable('quota_usages')
        .set({ in_use: inUse, updated_at: a('at') })
        .where('project_id', '=', a('projectId')).where('resource', 'in', live.map((_, i) => a(`r${i}`)));
      if (limited.length > 0) {
        u = u.where(sql<boolean>`case ${sql.join(limited.map(([, i]) => sql`when resource = ${a(`r${i}`)} then in_use + ${a(`d${i}`)} <= ${a(`l${i}`)}`), sql` `)} else true end`);
      }
      return u;
    }).run(q, args);
    if (Number(r.numAffectedRows ?? 0) === live.length) return [];
    const now = await this.usages(q, projectId);
    return live.filter((c) => now[c.resource] === undefined || (c.delta > 0 && c.limit >= 0 && now[c.resource]! + c.delta > c.limit)).map((c) => c.resource);
  }
}

/** One usage change: `delta` applied to `resource` unless it takes it past `limit` (-1: none). */
export interface UsageChange {
  resource: string;
  delta: number;
  limit: number;
}
