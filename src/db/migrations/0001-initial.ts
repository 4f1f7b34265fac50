/**
 * 0001: volumes, metadata, jobs, services, messages, events.
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.createTable('volumes')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('project_id', 'varchar(255)', (c) => c.notNull())
    .addColumn('user_id', 'varchar(255)', (c) => c.notNull())
    .addColumn('name', 'varchar(255)')
    .addColumn('description', 'varchar(255)')
    .addColumn('size', 'integer', (c) => c.notNull())
    .addColumn('status', 'varchar(255)', (c) => c.notNull())
    .addColumn('attach_status', 'varchar(255)', (c) => c.notNull())
    .addColumn('availability_zone', 'varchar(255)', (c) => c.notNull())
    .addColumn('host', 'varchar(255)')
    .addColumn('cluster_name', 'varchar(255)')
    .addColumn('volume_type_id', 'varchar(36)')
    .addColumn('snapshot_id', 'varchar(36)')
    .addColumn('source_volid', 'varchar(36)')
    .addColumn('bootable', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('multiattach', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('provider_location', 'varchar(255)')
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)')
    .addColumn('launched_at', 'varchar(32)')
    .execute();
  await db.schema.createIndex('volumes_project_created').on('volumes').columns(['project_id', 'created_at']).execute();
  await db.schema.createIndex('volumes_status').on('volumes').column('status').execute();

  await db.schema.createTable('volume_metadata')
    .addColumn('volume_id', 'varchar(36)', (c) => c.notNull().references('volumes.id').onDelete('cascade'))
    .addColumn('key', 'varchar(255)', (c) => c.notNull())
    .addColumn('value', 'varchar(255)', (c) => c.notNull())
    .addPrimaryKeyConstraint('volume_metadata_pk', ['volume_id', 'key'])
    .execute();

  await db.schema.createTable('jobs')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('kind', 'varchar(64)', (c) => c.notNull())
    .addColumn('payload_version', 'integer', (c) => c.notNull())
    .addColumn('payload', 'text', (c) => c.notNull())
    .addColumn('target', 'varchar(255)', (c) => c.notNull())
    .addColumn('resource_type', 'varchar(32)', (c) => c.notNull())
    .addColumn('resource_id', 'varchar(36)', (c) => c.notNull())
    .addColumn('state', 'varchar(16)', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('max_attempts', 'integer', (c) => c.notNull())
    .addColumn('lease_owner', 'varchar(64)')
    .addColumn('lease_expires_at', 'bigint')
    .addColumn('not_before', 'bigint', (c) => c.notNull())
    .addColumn('last_error', 'text')
    .addColumn('request_id', 'varchar(64)')
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('jobs_claim').on('jobs').columns(['target', 'state', 'not_before']).execute();
  await db.schema.createIndex('jobs_resource').on('jobs').columns(['resource_id', 'state']).execute();

  await db.schema.createTable('services')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('host', 'varchar(255)', (c) => c.notNull())
    .addColumn('binary', 'varchar(255)', (c) => c.notNull())
    .addColumn('backend', 'varchar(255)')
    .addColumn('cluster', 'varchar(255)')
    .addColumn('availability_zone', 'varchar(255)', (c) => c.notNull())
    .addColumn('version', 'varchar(32)', (c) => c.notNull())
    .addColumn('payload_versions', 'text', (c) => c.notNull())
    .addColumn('instance_id', 'varchar(64)', (c) => c.notNull())
    .addColumn('disabled', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('disabled_reason', 'varchar(255)')
    .addColumn('heartbeat_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('heartbeat_ms', 'bigint', (c) => c.notNull())
    .addColumn('capabilities', 'text')
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)')
    .addUniqueConstraint('services_host_binary', ['host', 'binary'])
    .execute();

  await db.schema.createTable('messages')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('project_id', 'varchar(255)', (c) => c.notNull())
    .addColumn('request_id', 'varchar(64)')
    .addColumn('resource_type', 'varchar(32)', (c) => c.notNull())
    .addColumn('resource_uuid', 'varchar(36)')
    .addColumn('event_id', 'varchar(64)', (c) => c.notNull())
    .addColumn('message_level', 'varchar(16)', (c) => c.notNull())
    .addColumn('action_id', 'varchar(8)', (c) => c.notNull())
    .addColumn('detail_id', 'varchar(8)', (c) => c.notNull())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('expires_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('messages_project').on('messages').columns(['project_id', 'created_at']).execute();

  await db.schema.createTable('events')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('project_id', 'varchar(255)', (c) => c.notNull())
    .addColumn('resource_type', 'varchar(32)', (c) => c.notNull())
    .addColumn('resource_id', 'varchar(36)', (c) => c.notNull())
    .addColumn('event', 'varchar(64)', (c) => c.notNull())
    .addColumn('from_status', 'varchar(255)')
    .addColumn('to_status', 'varchar(255)')
    .addColumn('request_id', 'varchar(64)')
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('events_resource').on('events').columns(['resource_id', 'created_at']).execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
