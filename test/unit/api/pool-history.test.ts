/**
 * The dashboard's pool history: samples of what live volume services report,
 * kept up to a bound per pool, none for a service that is down.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { PoolHistory } from '../../../src/api/pool-history.ts';
import { migrateToLatest, openDatabase, ServiceRepository } from '../../../src/db/index.ts';
import { SERVICE_REPORT_VERSION } from '../../../src/services/index.ts';

/** A clock the test moves. */
function manualClock(startMs: number) {
  let now = startMs;
  return { now: () => now, advance: (ms: number) => { now += ms; } };
}

const report = (freeGb: number) => ({
  report_version: SERVICE_REPORT_VERSION, volume_backend_name: 'file', vendor_name: 'Basalt', driver_version: '1.0', storage_protocol: 'nbd',
  pools: [{ pool_name: 'file', total_capacity_gb: 100, free_capacity_gb: freeGb, provisioned_capacity_gb: 100 - freeGb, reserved_percentage: 0, max_over_subscription_ratio: 1, thin_provisioning_support: true, thick_provisioning_support: false }],
});

async function setup(t: TestContext, samplesKept: number) {
  const db = openDatabase('sqlite://:memory:');
  t.after(() => db.close());
  await migrateToLatest(db);
  const clock = manualClock(Date.parse('2026-12-01T00:00:00Z'));
  const services = new ServiceRepository(clock);
  const { row } = await services.register(db.kysely, {
    host: 'node1@file', binary: 'cinder-volume', backend: 'file', cluster: 'node1@file', availabilityZone: 'nova', version: '1', payloadVersions: {}, instanceId: 'i1',
  });
  const history = new PoolHistory({ db, services, clock, downMs: 60_000, intervalMs: 10_000, samplesKept });
  return { db, clock, services, history, id: row.id };
}

test('each sample records the capacity the live service reports, oldest first, up to the bound', async (t) => {
  const { db, clock, services, history, id } = await setup(t, 3);
  for (const free of [90, 80, 70, 60]) {
    await services.heartbeat(db.kysely, id, report(free));
    await history.sample();
    clock.advance(10_000);
  }
  const [pool, ...others] = history.list();
  assert.deepEqual(others, []);
  assert.equal(pool!.name, 'node1@file#file');
  assert.equal(pool!.volume_backend_name, 'file');
  // The bound keeps the newest three.
  assert.deepEqual(pool!.samples.map((s) => s.free_capacity_gb), [80, 70, 60]);
  assert.deepEqual(pool!.samples.map((s) => s.provisioned_capacity_gb), [20, 30, 40]);
  assert.deepEqual(pool!.samples.map((s) => s.at), ['2026-12-01T00:00:10.000Z', '2026-12-01T00:00:20.000Z', '2026-12-01T00:00:30.000Z']);
  // `since` keeps the samples at or after it.
  assert.deepEqual(history.list('2026-12-01T00:00:20.000Z')[0]!.samples.map((s) => s.free_capacity_gb), [70, 60]);
});

test('a service that is down gets no sample: a gap, not its last report again', async (t) => {
  const { db, clock, services, history, id } = await setup(t, 10);
  await services.heartbeat(db.kysely, id, report(90));
  await history.sample();
  clock.advance(120_000);
  await history.sample();
  assert.equal(history.list()[0]!.samples.length, 1);
});
