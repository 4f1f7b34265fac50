/**
 * Queries on `quotas`, `quota_classes` and `quota_usages`. Usage changes are
 * single conditional UPDATEs: `in_use + delta <= limit` is checked by the same
 * statement that applies it, so concurrent consumers cannot overshoot.
 */
import { sql, type Kysely } from 'kysely';
import type { Clock } from '../common/index.ts';
import { isoAt } from '../common/index.ts';
import type { Database } from './schema.ts';

type Q = Kysely<Database>;

/** Repository over quota tables. */
export class QuotaRepository {
  constructor(private readonly clock: Clock) {}

  /** A project's explicit limits: resource → hard limit. */
  async projectLimits(q: Q, projectId: string): Promise<Record<string, number>> {
    const rows = await q.selectFrom('quotas').select(['resource', 'hard_limit']).where('project_id', '=', projectId).execute();
    return Object.fromEntries(rows.map((r) => [r.resource, Number(r.hard_limit)]));
  }

  /** A quota class's limits. */
  async classLimits(q: Q, className: string): Promise<Record<string, number>> {
    const rows = await q.selectFrom('quota_classes').select(['resource', 'hard_limit']).where('class_name', '=', className).execute();
    return Object.fromEntries(rows.map((r) => [r.resource, Number(r.hard_limit)]));
  }

  /** Sets project limits (upsert per resource). */
  async setProjectLimits(q: Q, projectId: string, limits: Record<string, number>): Promise<void> {
    const now = isoAt(this.clock.now());
    for (const [resource, hard_limit] of Object.entries(limits)) {
      await q.insertInto('quotas').values({ project_id: projectId, resource, hard_limit, updated_at: now })
        .onConflict((oc) => oc.columns(['project_id', 'resource']).doUpdateSet({ hard_limit, updated_at: now })).execute();
    }
  }

  /** Removes a project's explicit limits (back to class defaults). */
  async deleteProjectLimits(q: Q, projectId: string): Promise<void> {
    await q.deleteFrom('quotas').where('project_id', '=', projectId).execute();
  }

  /** Sets class limits (upsert per resource). */
  async setClassLimits(q: Q, className: string, limits: Record<string, number>): Promise<void> {
    const now = isoAt(this.clock.now());
    for (const [resource, hard_limit] of Object.entries(limits)) {
      await q.insertInto('quota_classes').values({ class_name: className, resource, hard_limit, updated_at: now })
        .onConflict((oc) => oc.columns(['class_name', 'resource']).doUpdateSet({ hard_limit, updated_at: now })).execute();
    }
  }

  /** A project's usage rows: resource → in use. Missing rows mean "not counted yet". */
  async usages(q: Q, projectId: string): Promise<Record<string, number>> {
    const rows = await q.selectFrom('quota_usages').select(['resource', 'in_use']).where('project_id', '=', projectId).execute();
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
   * Adds `delta` to the usage if the result stays within `limit` (-1: no
   * limit; negative deltas always apply, never below zero). Returns whether it applied.
   */
  async addUsage(q: Q, projectId: string, resource: string, delta: number, limit: number): Promise<boolean> {
    let u = q.updateTable('quota_usages')
      .set((eb) => ({
        // CASE rather than max()/greatest(): the same SQL on SQLite and PostgreSQL.
        in_use: delta >= 0 ? eb('in_use', '+', delta) : sql<number>`case when in_use + ${delta} < 0 then 0 else in_use + ${delta} end`,
        updated_at: isoAt(this.clock.now()),
      }))
      .where('project_id', '=', projectId).where('resource', '=', resource);
    if (delta > 0 && limit >= 0) u = u.where((eb) => eb(eb('in_use', '+', delta), '<=', limit));
    const r = await u.executeTakeFirst();
    return r.numUpdatedRows > 0n;
  }
}
