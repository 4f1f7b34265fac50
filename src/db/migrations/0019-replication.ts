/**
 * 0019: replication (issue 16). Expand only:
 * - `volumes.replication_status` (Cinder's: `disabled`, `enabled`, `copying`,
 *   `error`, `failing-over`, `failed-over`, `not-capable`); null in rows made
 *   before, shown as `disabled`.
 * - `services.replication_status` and `services.active_backend_id`: a volume
 *   service's failover state, as Cinder keeps them (null: never failed over;
 *   the status then follows the backend's `replication_device`).
 * - `volume_exports.cluster`: the backend whose copy of the volume the export
 *   serves (null: the volume's own, as before); a replication export serves
 *   the secondary's copy.
 * - `volume_replicas`: one row per replicated volume: where its secondary copy
 *   is, the mode, how far it has been shipped, and what went wrong last.
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('volumes').addColumn('replication_status', 'text').execute();
  await db.schema.alterTable('services').addColumn('replication_status', 'text').execute();
  await db.schema.alterTable('services').addColumn('active_backend_id', 'text').execute();
  await db.schema.alterTable('volume_exports').addColumn('cluster', 'text').execute();
  await db.schema.createTable('volume_replicas')
    .addColumn('volume_id', 'text', (c) => c.primaryKey())
    .addColumn('primary_cluster', 'text', (c) => c.notNull())
    .addColumn('primary_host', 'text', (c) => c.notNull())
    .addColumn('secondary_cluster', 'text', (c) => c.notNull())
    .addColumn('secondary_host', 'text', (c) => c.notNull())
    .addColumn('backend_id', 'text', (c) => c.notNull())
    .addColumn('mode', 'text', (c) => c.notNull())
    .addColumn('rpo_seconds', 'integer', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('export_name', 'text')
    .addColumn('last_point_id', 'text')
    .addColumn('last_point_at', 'text')
    .addColumn('peer_point_id', 'text')
    .addColumn('pending_ranges', 'text')
    .addColumn('bytes_shipped', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('last_error', 'text')
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('volume_replicas_primary').on('volume_replicas').column('primary_cluster').execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
