/**
 * How far the long operation of a resource is (`progress`, 0017): written by
 * the job doing it (a few times a second at most), read by the API and the
 * CLI, removed when the operation ends.
 */
import type { Kysely, Transaction } from 'kysely';
import type { Database } from './schema.ts';

type Q = Kysely<Database> | Transaction<Database>;

/** One operation's progress. */
export interface Progress { operation: string; doneBytes: number; totalBytes: number; updatedAt: string }

/** Records how far `operation` on `resourceId` is (replacing what was there). */
export async function recordProgress(q: Q, resourceType: string, resourceId: string, p: Progress): Promise<void> {
  const row = { resource_id: resourceId, resource_type: resourceType, operation: p.operation, done_bytes: p.doneBytes, total_bytes: p.totalBytes, updated_at: p.updatedAt };
  await q.insertInto('progress').values(row)
    .onConflict((oc) => oc.column('resource_id').doUpdateSet({ operation: row.operation, done_bytes: row.done_bytes, total_bytes: row.total_bytes, updated_at: row.updated_at }))
    .execute();
}

/** The progress of the operation running on `resourceId`, if one reports any. */
export async function progressOf(q: Q, resourceId: string): Promise<Progress | undefined> {
  const r = await q.selectFrom('progress').selectAll().where('resource_id', '=', resourceId).executeTakeFirst();
  return r && { operation: r.operation, doneBytes: Number(r.done_bytes), totalBytes: Number(r.total_bytes), updatedAt: r.updated_at };
}

/** Forgets the progress of `resourceId` (its operation ended). */
export async function clearProgress(q: Q, resourceId: string): Promise<void> {
  await q.deleteFrom('progress').where('resource_id', '=', resourceId).execute();
}
