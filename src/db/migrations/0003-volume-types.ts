/**
 * 0003: volume types with extra specs and project access, per-project default
 * types (3.62), QoS specs. Seeds Cinder's `__DEFAULT__` type and gives it to
 * volumes created before types existed.
 * Released: never edit; add a new numbered migration instead.
 */
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any
  await db.schema.createTable('qos_specs')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('name', 'varchar(255)', (c) => c.notNull().unique())
    .addColumn('consumer', 'varchar(32)', (c) => c.notNull())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createTable('qos_spec_items')
    .addColumn('qos_specs_id', 'varchar(36)', (c) => c.notNull().references('qos_specs.id').onDelete('cascade'))
    .addColumn('key', 'varchar(255)', (c) => c.notNull())
    .addColumn('value', 'varchar(255)', (c) => c.notNull())
    .addPrimaryKeyConstraint('qos_spec_items_pk', ['qos_specs_id', 'key'])
    .execute();
  await db.schema.createTable('volume_types')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('name', 'varchar(255)', (c) => c.notNull().unique())
    .addColumn('description', 'varchar(255)')
    .addColumn('is_public', 'integer', (c) => c.notNull())
    .addColumn('qos_specs_id', 'varchar(36)', (c) => c.references('qos_specs.id'))
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)')
    .execute();
  await db.schema.createTable('volume_type_extra_specs')
    .addColumn('volume_type_id', 'varchar(36)', (c) => c.notNull().references('volume_types.id').onDelete('cascade'))
    .addColumn('key', 'varchar(255)', (c) => c.notNull())
    .addColumn('value', 'varchar(255)', (c) => c.notNull())
    .addPrimaryKeyConstraint('volume_type_extra_specs_pk', ['volume_type_id', 'key'])
    .execute();
  await db.schema.createTable('volume_type_projects')
    .addColumn('volume_type_id', 'varchar(36)', (c) => c.notNull().references('volume_types.id').onDelete('cascade'))
    .addColumn('project_id', 'varchar(255)', (c) => c.notNull())
    .addPrimaryKeyConstraint('volume_type_projects_pk', ['volume_type_id', 'project_id'])
    .execute();
  await db.schema.createTable('default_volume_types')
    .addColumn('project_id', 'varchar(255)', (c) => c.primaryKey())
    .addColumn('volume_type_id', 'varchar(36)', (c) => c.notNull().references('volume_types.id').onDelete('cascade'))
    .execute();

  const id = randomUUID();
  await db.insertInto('volume_types').values({
    id, name: '__DEFAULT__', description: 'Default Volume Type', is_public: 1, qos_specs_id: null,
    created_at: new Date().toISOString(), updated_at: null,
  }).execute();
  await db.updateTable('volumes').set({ volume_type_id: id }).where('volume_type_id', 'is', null).execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
