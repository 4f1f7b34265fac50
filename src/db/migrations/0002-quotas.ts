/**
 * 0002: quotas. Per-project limits, quota class limits (the `default` class
 * overrides configured defaults), and usage counters kept exact by updating
 * them in the same transaction that creates or removes a resource.
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.createTable('quotas')
    .addColumn('project_id', 'varchar(255)', (c) => c.notNull())
    .addColumn('resource', 'varchar(300)', (c) => c.notNull())
    .addColumn('hard_limit', 'integer', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
    .addPrimaryKeyConstraint('quotas_pk', ['project_id', 'resource'])
    .execute();
  await db.schema.createTable('quota_classes')
    .addColumn('class_name', 'varchar(255)', (c) => c.notNull())
    .addColumn('resource', 'varchar(300)', (c) => c.notNull())
    .addColumn('hard_limit', 'integer', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
    .addPrimaryKeyConstraint('quota_classes_pk', ['class_name', 'resource'])
    .execute();
  await db.schema.createTable('quota_usages')
    .addColumn('project_id', 'varchar(255)', (c) => c.notNull())
    .addColumn('resource', 'varchar(300)', (c) => c.notNull())
    .addColumn('in_use', 'integer', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
    .addPrimaryKeyConstraint('quota_usages_pk', ['project_id', 'resource'])
    .execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
