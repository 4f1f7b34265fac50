/**
 * 0012: a volume can be read-only (`os-update_readonly_flag`, Cinder's
 * `readonly` admin metadata): its attachments are read-only exports, NULL
 * meaning never set. A snapshot can carry the progress a host reported
 * (`os-update_snapshot_status`), NULL meaning none (expand only: nullable columns).
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('volumes').addColumn('readonly', 'integer').execute();
  await db.schema.alterTable('snapshots').addColumn('progress', 'text').execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
