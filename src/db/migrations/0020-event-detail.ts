/**
 * 0020: what an event says beyond a status change, and how fast a long
 * operation goes (issues 17 and 18). Expand only:
 * - `events.detail`: a JSON object or null — an error status's reason (the
 *   user message's text), a backup's progress (percent, bytes, bytes per
 *   second), a failover's backends, an extend's sizes (`docs/events.md`);
 * - `progress.started_at`: when the operation began, so its throughput can
 *   be told (null in rows written before: no throughput shown).
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('events').addColumn('detail', 'text').execute();
  await db.schema.alterTable('progress').addColumn('started_at', 'text').execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
