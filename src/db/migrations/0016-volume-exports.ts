/**
 * 0016: NBD exports of volumes for Basalt's own use. A move between backends
 * that no one process serves reads its source through the source process's
 * export: the move's request makes the row (an unguessable name and a TLS-PSK
 * key, as an attachment's), the source's export server resolves it, and the
 * move's end removes it (expand only: a new table).
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.createTable('volume_exports')
    .addColumn('export_name', 'text', (c) => c.primaryKey())
    .addColumn('volume_id', 'text', (c) => c.notNull())
    .addColumn('purpose', 'text', (c) => c.notNull())
    .addColumn('read_only', 'integer', (c) => c.notNull())
    .addColumn('psk_identity', 'text', (c) => c.notNull().unique())
    .addColumn('psk_key', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('volume_exports_volume').on('volume_exports').column('volume_id').execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
