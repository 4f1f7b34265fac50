/**
 * How far the long operation of a resource is (`progress`, 0017): written by
 * the job doing it (a few times a second at most), read by the API and the
 * CLI, removed when the operation ends.
 */
import type { Kysely, Transaction } from 'kysely';
import type { Database } from './schema.ts';

type Q = Kysely<Database> | Transaction<Database>;

/** One operation's progress. */
export interface Progress {
  operation: string;
  doneBytes: number;
  totalBytes: number;
  updatedAt: string;
  /** When the operation began; absent in rows written before 0020. */
  startedAt?: string;
}

/** Bytes per second of `doneBytes` over `elapsedMs` (0 before any time has passed). */
export function bytesPerSecond(doneBytes: number, elapsedMs: number): number {
  return elapsedMs > 0 ? Math.round((doneBytes * 1000) / elapsedMs) : 0;
}

/** The mean rate of an operation so far (bytes per second, from its start to its last record); undefined when its start is not known. */
export function progressRate(p: Progress): number | undefined {
  return p.startedAt === undefined ? undefined : bytesPerSecond(p.doneBytes, Date.parse(p.updatedAt) - Date.parse(p.startedAt));
}

/** Records how far `operation` on `resourceId` is (replacing what was there). */
export async function recordProgress(q: Q, resourceType: string, resourceId: string, p: Progress): Promise<void> {
  const row = {
    resource_id: resourceId, resource_type: resourceType, operation: p.operation, done_bytes: p.doneBytes, total_bytes: p.totalBytes, updated_at: p.updatedAt,
    started_at: p.startedAt ?? null,
  };
  await q.insertInto('progress').values(row)
    .onConflict((oc) => oc.column('resource_id').doUpdateSet({
      operation: row.operation, done_bytes: row.done_bytes, total_bytes: row.total_bytes, updated_at: row.updated_at, started_at: row.started_at,
    }))
    .execute();
}

/** The progress of the operation running on `resourceId`, if one reports any. */
export async function progressOf(q: Q, resourceId: string): Promise<Progress | undefined> {
  const r = await q.selectFrom('progress').selectAll().where('resource_id', '=', resourceId).executeTakeFirst();
  return r && toProgress(r);
}

function toProgress(r: { operation: string; done_bytes: number; total_bytes: number; updated_at: string; started_at: string | null }): Progress {
  return {
    operation: r.operation, doneBytes: Number(r.done_bytes), totalBytes: Number(r.total_bytes), updatedAt: r.updated_at,
    ...(r.started_at !== null ? { startedAt: r.started_at } : {}),
  };
}

/** Every operation reporting progress now, with its resource (for `/metrics`). */
export async function runningProgress(q: Q): Promise<Array<Progress & { resourceType: string; resourceId: string }>> {
  const rows = await q.selectFrom('progress').selectAll().orderBy('resource_id').execute();
  return rows.map((r) => ({ ...toProgress(r), resourceType: r.resource_type, resourceId: r.resource_id }));
}

/** Forgets the progress of `resourceId` (its operation ended). */
export async function clearProgress(q: Q, resourceId: string): Promise<void> {
  await q.deleteFrom('progress').where('resource_id', '=', resourceId).execute();
}
