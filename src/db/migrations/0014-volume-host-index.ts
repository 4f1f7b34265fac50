/**
 * 0014: an index of volumes by pool and size. The scheduler and extend sum the
 * sizes of a pool's volumes (`provisionedGiB`) for every placement; without it
 * each placement read every volume of the deployment. Covering (`host`, `size`):
 * the sum is read from the index alone.
 * Released: never edit; add a new numbered migration instead.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.createIndex('volumes_host_size').on('volumes').columns(['host', 'size']).execute();
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
