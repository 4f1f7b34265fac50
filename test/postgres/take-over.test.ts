/**
 * Take-over (issue 5): two volume services of one cluster on PostgreSQL
 * share a backend's storage; one is SIGKILLed while it holds clone jobs. After
 * their leases expire the other member claims and completes them
 * (idempotently: half-written copies are replaced), so nothing is lost or stuck.
 */
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { startPostgres } from '../helpers/postgres.ts';
import { spawnBasalt } from '../helpers/process.ts';
import { FAST_TIMINGS, PROJECT, request, tempStateDir, waitFor } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;

test('a killed cluster member\'s jobs are completed by the other member', { timeout: 120_000 }, async (t) => {
  const pg = await startPostgres();
  const database = await pg.createDatabase();
  const stateDir = tempStateDir(t);
  const shared = path.join(stateDir, 'shared-storage');
  const env = {
    ...FAST_TIMINGS, BASALT_JOB_LEASE_SECONDS: '2', BASALT_STATE_DIR: stateDir, BASALT_DATABASE__CONNECTION: database,
    BASALT_PORT: '0', BASALT_NBD_PORT: '0', BASALT_LOG_LEVEL: 'info',
    BASALT_BACKEND_DEFAULTS__CLUSTER: 'c1', BASALT_BACKEND_DEFAULTS__FILE_VOLUME_DIR: shared,
    BASALT_COORDINATION__BACKEND_URL: database, // the cluster's locks: PostgreSQL advisory locks
    BASALT_QUOTA_VOLUMES: '-1', BASALT_QUOTA_GIGABYTES: '-1',
  };
  const procs: ChildProcess[] = [];
  t.after(() => { for (const p of procs) p.kill('SIGKILL'); });
  t.after(() => pg.stop()); // after the processes: hooks run in the order they were added
  const front = await spawnBasalt(env, 'api,scheduler');
  procs.push(front.child);
  const nodeA = await spawnBasalt({ ...env, BASALT_HOST: 'node-a' }, 'volume', 'volume service started');
  procs.push(nodeA.child);
  const url = front.url!;

  // A source volume with real data, so that clones take a while.
  const src = (await request(url, 'POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id as string;
  await waitFor('source', async () => (await request(url, 'GET', `${V}/volumes/${src}`)).body.volume.status === 'available');
  execFileSync('dd', ['if=/dev/urandom', `of=${path.join(shared, `volume-${src}`)}`, 'bs=1M', 'count=768', 'conv=notrunc', 'status=none']);

  // node-a alone takes the clone jobs, then dies in the middle of them.
  const clones: string[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await request(url, 'POST', `${V}/volumes`, { volume: { size: 1, source_volid: src } });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    clones.push(r.body.volume.id);
  }
  await waitFor('node-a holds a clone job', async () => fs.readdirSync(shared).some((f) => f.endsWith('.partial')));
  nodeA.child.kill('SIGKILL');
  const nodeB = await spawnBasalt({ ...env, BASALT_HOST: 'node-b' }, 'volume', 'volume service started');
  procs.push(nodeB.child);

  for (const id of clones) {
    await waitFor(`clone ${id} available`, async () => (await request(url, 'GET', `${V}/volumes/${id}`)).body.volume.status === 'available', 60_000);
  }
  const srcBytes = fs.readFileSync(path.join(shared, `volume-${src}`)).subarray(0, 768 * 1024 * 1024);
  for (const id of clones) {
    const copy = fs.readFileSync(path.join(shared, `volume-${id}`));
    assert.equal(copy.length, 1024 ** 3);
    assert.ok(copy.subarray(0, srcBytes.length).equals(srcBytes), `clone ${id} holds the source's data`);
  }
  assert.deepEqual(fs.readdirSync(shared).filter((f) => f.endsWith('.partial')), [], 'no half-written copy is left');
  const services = (await request(url, 'GET', `${V}/os-services`)).body.services as Array<{ host: string; state: string; cluster?: string }>;
  assert.ok(services.some((s) => s.host === 'node-b@file' && s.state === 'up'));
});
