/**
 * 0005: snapshots and their metadata.
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.createTable('snapshots')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('project_id', 'varchar(255)', (c) => c.notNull())
    .addColumn('user_id', 'varchar(255)', (c) => c.notNull())
    .addColumn('volume_id', 'varchar(36)', (c) => c.notNull().references('volumes.id'))
    .addColumn('volume_size', 'integer', (c) => c.notNull())
    .addColumn('volume_type_id', 'varchar(36)')
    .addColumn('name', 'varchar(255)')
    .addColumn('description', 'varchar(255)')
    .addColumn('status', 'varchar(255)', (c) => c.notNull())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)')
    .execute();
  await db.schema.createIndex('snapshots_volume').on('snapshots').columns(['volume_id', 'created_at']).execute();
  await db.schema.createIndex('snapshots_project_created').on('snapshots').columns(['project_id', 'created_at']).execute();
  await db.schema.createTable('snapshot_metadata')
    .addColumn('snapshot_id', 'varchar(36)', (c) => c.notNull().references('snapshots.id').onDelete('cascade'))
    .addColumn('key', 'varchar(255)', (c) => c.notNull())
    .addColumn('value', 'varchar(255)', (c) => c.notNull())
    .addPrimaryKeyConstraint('snapshot_metadata_pk', ['snapshot_id', 'key'])
    .execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
