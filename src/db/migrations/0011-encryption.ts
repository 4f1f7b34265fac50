/**
 * 0011: encrypted volume types. `volume_type_encryption` holds at most one
 * encryption spec per volume type (Cinder's `encryption` table: provider,
 * cipher, key size, control location); volumes and snapshots get the id of
 * their key in the key manager (expand only: a new table and nullable columns).
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.createTable('volume_type_encryption')
    .addColumn('encryption_id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('volume_type_id', 'varchar(36)', (c) => c.notNull().unique().references('volume_types.id').onDelete('cascade'))
    .addColumn('provider', 'varchar(255)', (c) => c.notNull())
    .addColumn('cipher', 'varchar(255)')
    .addColumn('key_size', 'integer')
    .addColumn('control_location', 'varchar(32)', (c) => c.notNull())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)')
    .execute();
  await db.schema.alterTable('volumes').addColumn('encryption_key_id', 'varchar(255)').execute();
  await db.schema.alterTable('snapshots').addColumn('encryption_key_id', 'varchar(255)').execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
