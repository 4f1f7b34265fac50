/**
 * `pool_usage` (migration 0026) on any database: the migration counts the
 * volumes already placed, and the triggers keep each pool's sum exact through
 * placements, size changes, moves between pools and deletes, as the plain sum
 * over `volumes` says.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sql } from 'kysely';
import { systemClock } from '../../../src/common/index.ts';
import { migrateTo, migrateToLatest, VolumeRepository, type Db, type VolumeRow } from '../../../src/db/index.ts';

const at = '2026-12-05T00:00:00.000Z';
const volume = (id: string, host: string | null, size: number): VolumeRow => ({
  id, project_id: 'p1', user_id: 'u1', name: null, description: null, size, status: 'available', attach_status: 'detached', availability_zone: 'nova',
  host, cluster_name: host?.split('#')[0] ?? null, volume_type_id: null, snapshot_id: null, source_volid: null, bootable: 0, multiattach: 0,
  provider_location: null, readonly: null, created_at: at, updated_at: null, launched_at: null, encryption_key_id: null, group_id: null,
  migration_status: null, migration_host: null, replication_status: null,
});

/** The tests, each on a fresh database from `open`. */
export function poolUsageCases(name: string, open: () => Promise<Db>): void {
  test(`${name}: the pool sums of migration 0026 start from the volumes placed before it and follow every change to volumes`, async () => {
    const db = await open();
    const k = db.kysely;
    await migrateTo(db, '0025-jobs-claim-order');
    await k.insertInto('volumes').values([volume('a1', 'h@alpha#alpha', 1), volume('a2', 'h@alpha#alpha', 2), volume('n1', null, 8)]).execute();
    await migrateToLatest(db);
    const volumes = new VolumeRepository(systemClock);
    const A = 'h@alpha#alpha';
    const B = 'h@beta#beta';
    const sums = async (): Promise<[number, number]> => [await volumes.provisionedGiB(k, A), await volumes.provisionedGiB(k, B)];
    /** The plain sum over `volumes`, which the kept one must always equal. */
    const truth = async (): Promise<[number, number]> => {
      const of = async (host: string) => Number((await sql<{ g: number | null }>`select sum(size) as g from volumes where host = ${host}`.execute(k)).rows[0]!.g ?? 0);
      return [await of(A), await of(B)];
    };
    const expect = async (want: [number, number], what: string): Promise<void> => {
      assert.deepEqual(await sums(), want, what);
      assert.deepEqual(await truth(), want, `${what} (the sum over volumes agrees)`);
    };
    await expect([3, 0], 'the volumes placed before the migration count; an unplaced one does not');
    await k.insertInto('volumes').values(volume('a3', A, 5)).execute();
    await expect([8, 0], 'a volume inserted placed');
    await k.updateTable('volumes').set({ host: B, cluster_name: 'h@beta' }).where('id', '=', 'n1').execute();
    await expect([8, 8], 'a placement');
    await k.updateTable('volumes').set({ size: 7 }).where('id', '=', 'a2').execute();
    await expect([13, 8], 'an extend');
    await k.updateTable('volumes').set({ host: B }).where('id', '=', 'a3').execute();
    await expect([8, 13], 'a move to another pool');
    await k.updateTable('volumes').set({ status: 'in-use', name: 'x' }).where('host', '=', A).execute();
    await expect([8, 13], 'other columns change nothing');
    await k.transaction().execute(async (tx) => {
      await tx.deleteFrom('volumes').where('id', '=', 'a1').execute();
      await tx.updateTable('volumes').set({ host: null }).where('id', '=', 'n1').execute();
    });
    await expect([7, 5], 'a delete, and a volume taken out of its pool');
    await k.transaction().execute(async (tx) => {
      await tx.deleteFrom('volumes').where('id', '=', 'a2').execute();
      throw new Error('rolled back');
    }).catch(() => undefined);
    await expect([7, 5], 'a rolled back change leaves the sums as they were');
    await db.close();
  });
}
