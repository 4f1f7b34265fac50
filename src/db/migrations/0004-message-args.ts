/**
 * 0004: user messages may carry safe arguments of their detail (e.g. which
 * filter rejected each backend). Expand only: a nullable column.
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('messages').addColumn('detail_args', 'text').execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
