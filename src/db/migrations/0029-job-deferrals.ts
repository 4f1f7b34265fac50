/**
 * 0029: `jobs.deferrals`, how many times a job was put back because Basalt's
 * own database or coordination service could not be reached. Such a run did
 * not get to do its work, so it does not use one of the job's attempts; the
 * count only spaces its retries (a back-off of its own, capped low so the
 * queue moves again soon after the service returns).
 * Release N-1 does not know the column: its jobs start with 0.
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('jobs').addColumn('deferrals', 'integer', (c) => c.notNull().defaultTo(0)).execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
