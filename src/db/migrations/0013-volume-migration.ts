/**
 * 0013: a volume can move between backends (`os-migrate_volume`, retype with
 * migration). `migration_status` is Cinder's column (null when never moved;
 * `migrating`, then `success` or `error`); `migration_host` names the
 * destination pool while a move runs, so that a move the sweeper finds stuck
 * can still remove what it made there (expand only: nullable columns).
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('volumes').addColumn('migration_status', 'text').execute();
  await db.schema.alterTable('volumes').addColumn('migration_host', 'text').execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
