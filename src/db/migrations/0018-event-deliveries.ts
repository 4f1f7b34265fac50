/**
 * 0018: the history of event deliveries to parties outside Basalt (the
 * compute side's external events API, later webhooks): one row per attempt,
 * with its outcome, so an operator sees what was sent, when, and why it
 * failed, and `/metrics` counts outcomes across every process (expand only: a
 * new table).
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.createTable('event_deliveries')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('job_id', 'varchar(36)', (c) => c.notNull())
    .addColumn('sink', 'varchar(64)', (c) => c.notNull())
    .addColumn('project_id', 'varchar(255)', (c) => c.notNull())
    .addColumn('resource_type', 'varchar(32)', (c) => c.notNull())
    .addColumn('resource_id', 'varchar(36)', (c) => c.notNull())
    .addColumn('event', 'varchar(64)', (c) => c.notNull())
    .addColumn('attempt', 'integer', (c) => c.notNull())
    .addColumn('outcome', 'varchar(16)', (c) => c.notNull())
    .addColumn('http_status', 'integer')
    .addColumn('error', 'text')
    .addColumn('duration_ms', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('event_deliveries_resource').on('event_deliveries').columns(['resource_id', 'created_at']).execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
