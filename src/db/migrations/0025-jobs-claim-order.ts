/**
 * 0025: the `jobs_claim` index in claim order. A claim takes the oldest due
 * job of one target (`not_before`, then `created_at`); with both columns in
 * the index after (target, state) it reads the queue from its head and stops
 * at the first job it may take, instead of sorting every queued job of the
 * target at every claim.
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropIndex('jobs_claim').execute();
  await db.schema.createIndex('jobs_claim').on('jobs').columns(['target', 'state', 'not_before', 'created_at']).execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
