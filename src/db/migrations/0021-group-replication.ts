/**
 * 0021: group replication (issue 16 part 3, Cinder's 3.38). Expand only:
 * - `groups.replication_status` (Cinder's: `disabled`, `enabling`, `enabled`,
 *   `disabling`, `failing-over`, `failed-over`, `error`); null in rows made
 *   before, shown as `disabled`.
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('groups').addColumn('replication_status', 'text').execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
