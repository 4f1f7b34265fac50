/**
 * 0006: attachments (the 3.27 attachments API): who a volume is attached
 * to, with which connector, and the export that serves it.
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.createTable('attachments')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('volume_id', 'varchar(36)', (c) => c.notNull().references('volumes.id'))
    .addColumn('project_id', 'varchar(255)', (c) => c.notNull())
    .addColumn('instance_uuid', 'varchar(36)')
    .addColumn('attached_host', 'varchar(255)')
    .addColumn('mountpoint', 'varchar(255)')
    .addColumn('attach_mode', 'varchar(8)', (c) => c.notNull())
    .addColumn('attach_status', 'varchar(32)', (c) => c.notNull())
    .addColumn('connector', 'text')
    .addColumn('connection_info', 'text')
    .addColumn('export_name', 'varchar(64)', (c) => c.notNull().unique())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)')
    .addColumn('attach_time', 'varchar(32)')
    .execute();
  await db.schema.createIndex('attachments_volume').on('attachments').column('volume_id').execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
