/**
 * 0009: a service can be frozen (os-services freeze/thaw): its backend takes
 * no management operations until thawed (expand only: a column with a default).
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('services').addColumn('frozen', 'integer', (c) => c.notNull().defaultTo(0)).execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
