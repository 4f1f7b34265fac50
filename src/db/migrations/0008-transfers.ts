/**
 * 0008: volume transfers (os-volume-transfer, 3.55 volume-transfers): a
 * pending hand-over of a volume to whoever presents the auth key. Only a hash
 * of the key is kept.
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.createTable('transfers')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('volume_id', 'varchar(36)', (c) => c.notNull().references('volumes.id'))
    .addColumn('project_id', 'varchar(255)', (c) => c.notNull())
    .addColumn('name', 'varchar(255)')
    .addColumn('salt', 'varchar(64)', (c) => c.notNull())
    .addColumn('key_hash', 'varchar(128)', (c) => c.notNull())
    .addColumn('no_snapshots', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('transfers_volume').on('transfers').column('volume_id').unique().execute();
  await db.schema.createIndex('transfers_project').on('transfers').column('project_id').execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
