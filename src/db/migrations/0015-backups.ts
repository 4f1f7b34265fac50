/**
 * 0015: backups (issue 15) and their metadata (3.43). A row holds what
 * Cinder's backup views show, the service that ran it, and where its data
 * lives: the backup repository keeps it under the volume's id, whatever
 * happens to the volume afterwards (no foreign key to `volumes`).
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.createTable('backups')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('project_id', 'varchar(255)', (c) => c.notNull())
    .addColumn('user_id', 'varchar(255)', (c) => c.notNull())
    .addColumn('volume_id', 'varchar(36)', (c) => c.notNull())
    .addColumn('snapshot_id', 'varchar(36)')
    .addColumn('name', 'varchar(255)')
    .addColumn('description', 'varchar(255)')
    .addColumn('status', 'varchar(255)', (c) => c.notNull())
    .addColumn('fail_reason', 'varchar(255)')
    .addColumn('size', 'integer', (c) => c.notNull())
    .addColumn('object_count', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('container', 'varchar(255)')
    .addColumn('parent_id', 'varchar(36)')
    .addColumn('availability_zone', 'varchar(255)')
    .addColumn('data_timestamp', 'varchar(32)')
    .addColumn('service', 'varchar(255)')
    .addColumn('host', 'varchar(255)')
    .addColumn('restore_volume_id', 'varchar(36)')
    .addColumn('volume_metadata', 'text')
    .addColumn('service_metadata', 'varchar(255)')
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)')
    .execute();
  await db.schema.createIndex('backups_volume').on('backups').columns(['volume_id', 'data_timestamp']).execute();
  await db.schema.createIndex('backups_parent').on('backups').columns(['parent_id']).execute();
  await db.schema.createIndex('backups_project_created').on('backups').columns(['project_id', 'created_at']).execute();
  await db.schema.createTable('backup_metadata')
    .addColumn('backup_id', 'varchar(36)', (c) => c.notNull().references('backups.id').onDelete('cascade'))
    .addColumn('key', 'varchar(255)', (c) => c.notNull())
    .addColumn('value', 'varchar(255)', (c) => c.notNull())
    .addPrimaryKeyConstraint('backup_metadata_pk', ['backup_id', 'key'])
    .execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
