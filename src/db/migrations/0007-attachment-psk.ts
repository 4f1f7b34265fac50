/**
 * 0007: each attachment's TLS-PSK identity and key (expand only: nullable columns).
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('attachments').addColumn('psk_identity', 'varchar(64)').execute();
  await db.schema.alterTable('attachments').addColumn('psk_key', 'varchar(128)').execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
