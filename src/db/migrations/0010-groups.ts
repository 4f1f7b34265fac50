/**
 * 0010: generic volume groups (3.13) with group types and their specs (3.11),
 * group snapshots (3.14); volumes name their group and snapshots their group
 * snapshot (expand only: new tables and nullable columns).
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.createTable('group_types')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('name', 'varchar(255)', (c) => c.notNull().unique())
    .addColumn('description', 'varchar(255)')
    .addColumn('is_public', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)')
    .execute();
  await db.schema.createTable('group_type_specs')
    .addColumn('group_type_id', 'varchar(36)', (c) => c.notNull().references('group_types.id').onDelete('cascade'))
    .addColumn('key', 'varchar(255)', (c) => c.notNull())
    .addColumn('value', 'varchar(255)', (c) => c.notNull())
    .addPrimaryKeyConstraint('group_type_specs_pk', ['group_type_id', 'key'])
    .execute();
  await db.schema.createTable('group_type_projects')
    .addColumn('group_type_id', 'varchar(36)', (c) => c.notNull().references('group_types.id').onDelete('cascade'))
    .addColumn('project_id', 'varchar(255)', (c) => c.notNull())
    .addPrimaryKeyConstraint('group_type_projects_pk', ['group_type_id', 'project_id'])
    .execute();
  await db.schema.createTable('groups')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('project_id', 'varchar(255)', (c) => c.notNull())
    .addColumn('user_id', 'varchar(255)', (c) => c.notNull())
    .addColumn('name', 'varchar(255)')
    .addColumn('description', 'varchar(255)')
    .addColumn('status', 'varchar(255)', (c) => c.notNull())
    .addColumn('availability_zone', 'varchar(255)', (c) => c.notNull())
    .addColumn('group_type_id', 'varchar(36)', (c) => c.notNull().references('group_types.id'))
    .addColumn('host', 'varchar(255)')
    .addColumn('cluster_name', 'varchar(255)')
    .addColumn('group_snapshot_id', 'varchar(36)')
    .addColumn('source_group_id', 'varchar(36)')
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)')
    .execute();
  await db.schema.createIndex('groups_project_created').on('groups').columns(['project_id', 'created_at']).execute();
  await db.schema.createTable('group_volume_types')
    .addColumn('group_id', 'varchar(36)', (c) => c.notNull().references('groups.id').onDelete('cascade'))
    .addColumn('volume_type_id', 'varchar(36)', (c) => c.notNull().references('volume_types.id'))
    .addPrimaryKeyConstraint('group_volume_types_pk', ['group_id', 'volume_type_id'])
    .execute();
  await db.schema.createTable('group_snapshots')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('project_id', 'varchar(255)', (c) => c.notNull())
    .addColumn('user_id', 'varchar(255)', (c) => c.notNull())
    .addColumn('group_id', 'varchar(36)', (c) => c.notNull().references('groups.id'))
    .addColumn('group_type_id', 'varchar(36)', (c) => c.notNull())
    .addColumn('name', 'varchar(255)')
    .addColumn('description', 'varchar(255)')
    .addColumn('status', 'varchar(255)', (c) => c.notNull())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)')
    .execute();
  await db.schema.createIndex('group_snapshots_project_created').on('group_snapshots').columns(['project_id', 'created_at']).execute();
  await db.schema.createIndex('group_snapshots_group').on('group_snapshots').column('group_id').execute();
  await db.schema.alterTable('volumes').addColumn('group_id', 'varchar(36)').execute();
  await db.schema.createIndex('volumes_group').on('volumes').column('group_id').execute();
  await db.schema.alterTable('snapshots').addColumn('group_snapshot_id', 'varchar(36)').execute();
  await db.schema.createIndex('snapshots_group_snapshot').on('snapshots').column('group_snapshot_id').execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
