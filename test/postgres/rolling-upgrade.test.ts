/**
 * Rolling upgrade, N-1 (issue 5): a volume service capped to the previous
 * payload versions (`job_payload_version_cap = 1`, as release N-1) runs beside
 * a current one in one cluster. While it is alive every writer pins
 * `volume.delete` to version 1 and both members handle the jobs; once it is
 * gone, writers move to version 2.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import pg from 'pg';
import { startPostgres } from '../helpers/postgres.ts';
import { spawnBasalt } from '../helpers/process.ts';
import { FAST_TIMINGS, PROJECT, request, tempStateDir, waitFor } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;

test('release N and N-1 side by side: writers pin to the oldest live reader', { timeout: 120_000 }, async (t) => {
  const postgres = await startPostgres();
  const database = await postgres.createDatabase();
  const stateDir = tempStateDir(t);
  const env = {
    ...FAST_TIMINGS, BASALT_SERVICE_DOWN_TIME: '3', BASALT_STATE_DIR: stateDir, BASALT_DATABASE__CONNECTION: database,
    BASALT_PORT: '0', BASALT_NBD_PORT: '0', BASALT_LOG_LEVEL: 'info', BASALT_QUOTA_VOLUMES: '-1', BASALT_QUOTA_SNAPSHOTS: '-1',
    BASALT_BACKEND_DEFAULTS__CLUSTER: 'c1', BASALT_BACKEND_DEFAULTS__FILE_VOLUME_DIR: path.join(stateDir, 'shared'),
  };
  const procs: ChildProcess[] = [];
  t.after(() => { for (const p of procs) p.kill('SIGKILL'); });
  t.after(() => postgres.stop()); // after the processes: hooks run in the order they were added
  const front = await spawnBasalt(env, 'api,scheduler');
  procs.push(front.child);
  const old = await spawnBasalt({ ...env, BASALT_HOST: 'old', BASALT_JOB_PAYLOAD_VERSION_CAP: '1' }, 'volume', 'volume service started');
  procs.push(old.child);
  const current = await spawnBasalt({ ...env, BASALT_HOST: 'new' }, 'volume', 'volume service started');
  procs.push(current.child);
  const url = front.url!;
  const client = new pg.Client({ connectionString: database });
  client.on('error', () => undefined); // the cluster stops before this client in teardown
  await client.connect();
  t.after(() => client.end());

  const versions = (await client.query(`select host, payload_versions from services where "binary" = 'cinder-volume' order by host`)).rows;
  assert.equal(JSON.parse(versions[0].payload_versions)['volume.delete'], 2, 'the current node reads v2');
  assert.equal(JSON.parse(versions[1].payload_versions)['volume.delete'], 1, 'the N-1 node reads v1 only');

  /** A volume with one snapshot, then its cascade delete; resolves when both are gone. */
  const cascade = async (): Promise<void> => {
    const vol = (await request(url, 'POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id;
    await waitFor('volume', async () => (await request(url, 'GET', `${V}/volumes/${vol}`)).body.volume.status === 'available');
    const snap = (await request(url, 'POST', `${V}/snapshots`, { snapshot: { volume_id: vol } })).body.snapshot.id;
    await waitFor('snapshot', async () => (await request(url, 'GET', `${V}/snapshots/${snap}`)).body.snapshot.status === 'available');
    assert.equal((await request(url, 'DELETE', `${V}/volumes/${vol}?cascade=true`)).status, 202);
    await waitFor('gone', async () => (await request(url, 'GET', `${V}/volumes/${vol}`)).status === 404
      && (await request(url, 'GET', `${V}/snapshots/${snap}`)).status === 404, 20_000);
  };
  const deleteJobs = async () => (await client.query(`select payload_version, payload from jobs where kind = 'volume.delete' order by created_at`)).rows;

  for (let i = 0; i < 6; i++) await cascade();
  const pinned = await deleteJobs();
  assert.equal(pinned.length, 6);
  assert.ok(pinned.every((j) => j.payload_version === 1 && !('snapshotIds' in JSON.parse(j.payload))), 'v1 payloads while N-1 lives');
  const failed = (await client.query(`select count(*)::int as n from jobs where state = 'failed'`)).rows[0].n;
  assert.equal(failed, 0, 'the N-1 node never met a payload it cannot read');

  old.child.kill('SIGKILL');
  await new Promise((r) => setTimeout(r, 3500)); // its heartbeat goes stale: it no longer counts
  await cascade();
  const after = await deleteJobs();
  const last = after[after.length - 1];
  assert.equal(last.payload_version, 2);
  assert.equal(JSON.parse(last.payload).snapshotIds.length, 1);
});
