/**
 * What the PostgreSQL locks of `Db.lockRows` and `Db.lockKeys` hold back, and
 * what they must not: a volume's row lock serialises its lockers but lets a
 * row that refers to the volume be inserted; a placement key serialises
 * placements on a service without making that service's heartbeat wait (it
 * did: under a chaos run's load, heartbeats waited seconds behind placements
 * that waited on volumes' rows, and the services were reported down).
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { sql, type Kysely } from 'kysely';
import { systemClock } from '../../src/common/index.ts';
import { migrateToLatest, openDatabase, QuotaRepository, ServiceRepository, VolumeRepository, type Database, type Db, type Tx } from '../../src/db/index.ts';
import { JobQueue } from '../../src/jobs/index.ts';
import { QuotaEngine } from '../../src/quota/index.ts';
import { roomFor } from '../../src/services/index.ts';
import { startPostgres } from '../helpers/postgres.ts';

const postgres = await startPostgres();
after(() => postgres.stop());

const at = '2026-12-07T00:00:00.000Z';

async function fresh(): Promise<Db> {
  const db = openDatabase(await postgres.createDatabase());
  await migrateToLatest(db);
  return db;
}

/**
 * Runs `fn` in a transaction of its own connection that gives up waiting for
 * a lock after `ms`: resolves 'done', or 'waited' when it had to give up.
 */
async function withinLockTimeout(db: Db, ms: number, fn: (tx: Kysely<Database>) => Promise<unknown>): Promise<'done' | 'waited'> {
  try {
    await db.kysely.transaction().execute(async (tx) => {
      await sql.raw(`set local lock_timeout = '${ms}ms'`).execute(tx);
      await fn(tx);
    });
    return 'done';
  } catch (err) {
    if ((err as { code?: string }).code === '55P03') return 'waited'; // lock_not_available
    throw err;
  }
}

/** Holds a transaction open in which `lock` ran, until the returned function is called. */
async function holding(db: Db, lock: (tx: Kysely<Database>) => Promise<void>): Promise<() => Promise<void>> {
  let release!: () => void;
  const released = new Promise<void>((r) => { release = r; });
  let locked!: () => void;
  const isLocked = new Promise<void>((r) => { locked = r; });
  const done = db.kysely.transaction().execute(async (tx) => {
    await lock(tx);
    locked();
    await released;
  });
  await Promise.race([isLocked, done]);
  return async () => { release(); await done; };
}

test('a volume row lock keeps out another locker of the row, not the insert of a snapshot or a clone that refers to it', async () => {
  const db = await fresh();
  try {
    await db.kysely.insertInto('volumes').values({
      id: 'v1', project_id: 'p1', user_id: 'u1', name: null, description: null, size: 1, status: 'available', attach_status: 'detached', availability_zone: 'nova',
      host: null, cluster_name: null, volume_type_id: null, snapshot_id: null, source_volid: null, bootable: 0, multiattach: 0,
      provider_location: null, readonly: null, created_at: at, updated_at: null, launched_at: null, encryption_key_id: null, group_id: null,
      migration_status: null, migration_host: null, replication_status: null,
    }).execute();
    const release = await holding(db, (tx) => db.lockRows(tx, 'volumes', ['v1']));
    try {
      assert.equal(await withinLockTimeout(db, 500, (tx) => db.lockRows(tx, 'volumes', ['v1'])), 'waited', 'a second locker waits');
      assert.equal(await withinLockTimeout(db, 2000, (tx) => tx.insertInto('snapshots').values({
        id: 's1', project_id: 'p1', user_id: 'u1', volume_id: 'v1', volume_size: 1, volume_type_id: null, name: null, description: null,
        status: 'creating', created_at: at, updated_at: null, group_snapshot_id: null, encryption_key_id: null, progress: null,
      }).execute()), 'done', 'a snapshot of the locked volume is inserted without waiting');
      assert.equal(await withinLockTimeout(db, 2000, (tx) => tx.insertInto('volumes').values({
        id: 'v2', project_id: 'p1', user_id: 'u1', name: null, description: null, size: 1, status: 'creating', attach_status: 'detached', availability_zone: 'nova',
        host: null, cluster_name: null, volume_type_id: null, snapshot_id: null, source_volid: 'v1', bootable: 0, multiattach: 0,
        provider_location: null, readonly: null, created_at: at, updated_at: null, launched_at: null, encryption_key_id: null, group_id: null,
        migration_status: null, migration_host: null, replication_status: null,
      }).execute()), 'done', 'a clone of the locked volume is inserted without waiting');
      assert.equal(await withinLockTimeout(db, 500, (tx) => tx.deleteFrom('volumes').where('id', '=', 'v1').execute()), 'waited', 'a delete of the locked row waits');
    } finally {
      await release();
    }
    assert.equal(await withinLockTimeout(db, 2000, (tx) => db.lockRows(tx, 'volumes', ['v1'])), 'done', 'released at the end of the holder\'s transaction');
  } finally {
    await db.close();
  }
});

test('a placement key keeps out another placement on the service, not the service\'s heartbeat', async () => {
  const db = await fresh();
  try {
    const services = new ServiceRepository(systemClock);
    const { row } = await services.register(db.kysely, {
      host: 'node-1@file', binary: 'cinder-volume', backend: 'file', cluster: 'c1', availabilityZone: 'nova', version: '1', payloadVersions: {}, instanceId: 'i1',
    });
    const pool = { total_capacity_gb: 100, free_capacity_gb: 100, reserved_percentage: 0, max_over_subscription_ratio: 1, thin_provisioning_support: true, thick_provisioning_support: false };
    const volumes = new VolumeRepository(systemClock);
    const place = (serviceId: string) => async (tx: Tx) => { assert.ok(await roomFor(tx, { db, volumes }, { serviceId, host: 'node-1@file#file', pool }, 1)); };
    const release = await holding(db, place(row.id));
    try {
      assert.equal(await withinLockTimeout(db, 500, place(row.id)), 'waited', 'a second placement on the service waits');
      assert.equal(await withinLockTimeout(db, 2000, place('another service')), 'done', 'a placement on another service does not');
      assert.equal(await withinLockTimeout(db, 2000, (tx) => services.heartbeat(tx, row.id, { pools: [] })), 'done', 'the service\'s heartbeat does not wait');
    } finally {
      await release();
    }
    assert.equal(await withinLockTimeout(db, 2000, place(row.id)), 'done', 'released at the end of the holder\'s transaction');
  } finally {
    await db.close();
  }
});

test('a transaction of the queue changes its project\'s quota usage last: the row is not held across its other statements', async () => {
  const db = await fresh();
  try {
    const quotas = new QuotaEngine({
      repo: new QuotaRepository(systemClock), count: async () => 0,
      config: { quota_volumes: 10, quota_snapshots: 10, quota_gigabytes: 100, quota_backups: 10, quota_backup_gigabytes: 100, quota_groups: 10, per_volume_size_limit: -1 },
    });
    const queue = new JobQueue(db, systemClock, { maxAttempts: 3, leaseMs: 10_000, retryDelayMs: 100 });
    const usage = async (): Promise<{ volumes?: number; gigabytes?: number }> => {
      const { volumes, gigabytes } = await quotas.usage(db.kysely, 'p1');
      return { volumes, gigabytes };
    };
    await queue.transaction((tx) => quotas.consume(tx, 'p1', { volumes: 1, gigabytes: 1 }));
    assert.deepEqual(await usage(), { volumes: 1, gigabytes: 1 });

    let resume!: () => void;
    const paused = new Promise<void>((r) => { resume = r; });
    let consumed!: () => void;
    const afterConsume = new Promise<void>((r) => { consumed = r; });
    const create = queue.transaction(async (tx) => {
      await quotas.consume(tx, 'p1', { volumes: 1, gigabytes: 2 });
      consumed();
      await paused; // the rest of a create: its row, its job, its event
    });
    await afterConsume;
    try {
      assert.equal(await withinLockTimeout(db, 2000, (tx) => quotas.release(tx, 'p1', { volumes: 1, gigabytes: 1 })), 'done',
        'another writer of the project changes the usage without waiting for the create');
    } finally {
      resume();
      await create;
    }
    assert.deepEqual(await usage(), { volumes: 1, gigabytes: 2 }, 'both changes counted');

    await assert.rejects(queue.transaction(async (tx) => {
      await quotas.consume(tx, 'p1', { gigabytes: 90 });
      await quotas.consume(tx, 'p1', { gigabytes: 9 }); // within the limit by the read, over it with the change before
    }), { name: 'QuotaExceededError' }, 'the change made last still refuses what goes past the limit');
    await assert.rejects(queue.transaction((tx) => quotas.consume(tx, 'p1', { gigabytes: 99 })), { name: 'QuotaExceededError' }, 'refused at once by the read');
    assert.deepEqual(await usage(), { volumes: 1, gigabytes: 2 }, 'a refused transaction changed nothing');
  } finally {
    await db.close();
  }
});
