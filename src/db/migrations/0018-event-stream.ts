/**
 * 0018 (second part): the event stream's order. Each event row gets a
 * sequence number, strictly increasing in commit order, so a client that
 * follows a project's events (server-sent events, `Last-Event-ID`) resumes
 * after the last one it saw without missing or repeating one, across
 * reconnects and restarts (expand only: a new table beside `events`).
 * Released: never edit; add a new numbered migration instead.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  // SQLite has no version(): it answers with an error.
  const postgres = await sql`select version()`.execute(db).then(() => true, () => false);
  await db.schema.createTable('event_stream')
    .addColumn('seq', postgres ? 'bigserial' : 'integer', (c) => (postgres ? c.primaryKey() : c.primaryKey().autoIncrement()))
    .addColumn('event_id', 'varchar(36)', (c) => c.notNull())
    .addColumn('project_id', 'varchar(255)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('event_stream_project').on('event_stream').columns(['project_id', 'seq']).execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
