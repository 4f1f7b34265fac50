/**
 * 0021 (second): checkpoints of replicated groups' copies (issue 16 part 3).
 * Expand only, on `volume_replicas`:
 * - `checkpoint_point_id`: the point of which the secondary's backend holds a
 *   snapshot of the copy (its **checkpoint**), null when none;
 * - `shipping_point_id`: a group point being written to the copy, set before
 *   its first write and cleared when it is recorded; still set after a
 *   failure, it says the copy may be past its last point.
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('volume_replicas').addColumn('checkpoint_point_id', 'text').execute();
  await db.schema.alterTable('volume_replicas').addColumn('shipping_point_id', 'text').execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
