/** The test Ceph cluster (test/helpers/ceph.ts) starts, takes RBD images in its pool, and leaves nothing behind. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { startCeph } from '../helpers/ceph.ts';

test('a one-node Ceph cluster starts, serves RBD in its pool and is gone after stop', async (t) => {
  const started = performance.now();
  const ceph = await startCeph({ fresh: true }); // this test is about starting one, shared or not
  let stopped = false;
  t.after(() => (stopped ? undefined : ceph.stop()));
  t.diagnostic(`ready in ${Math.round(performance.now() - started)} ms`);
  const health = JSON.parse(await ceph.ceph('health', '-f', 'json')) as { status: string };
  assert.equal(health.status, 'HEALTH_OK');
  await ceph.rbd('create', '--size', '64M', `${ceph.pool}/probe`);
  const info = JSON.parse(await ceph.rbd('info', '--format', 'json', `${ceph.pool}/probe`)) as { features: string[] };
  for (const f of ['layering', 'exclusive-lock', 'object-map', 'fast-diff']) assert.ok(info.features.includes(f), f);
  await ceph.stop();
  stopped = true;
  assert.equal(fs.existsSync(ceph.confPath), false, 'its folder is removed');
});
