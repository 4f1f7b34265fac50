/**
 * `basalt server --roles` split over two processes on one host, sharing the
 * default SQLite database file: the API in one, the scheduler and the volume
 * service in the other. Creates and deletes at concurrency 10 are all answered
 * (no 5xx: two connections writing one file wait for each other's lock) and
 * all end where they should.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { spawnBasalt } from '../helpers/process.ts';
import { FAST_TIMINGS, PROJECT, request, tempStateDir, testDatabase, waitFor } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;

test('the API and the volume roles in two processes on one database: 200 creates and their deletes at concurrency 10, every answer a 202, every volume available then gone', { timeout: 180_000 }, async (t) => {
  const stateDir = tempStateDir(t);
  const database = await testDatabase(stateDir);
  const env = { ...FAST_TIMINGS, BASALT_STATE_DIR: stateDir, BASALT_LOG_LEVEL: 'info', BASALT_QUOTA_VOLUMES: '-1', BASALT_QUOTA_GIGABYTES: '-1', ...database.env };
  const api = await spawnBasalt({ ...env, BASALT_PORT: '0' }, 'api');
  t.after(() => { api.child.kill('SIGKILL'); });
  const roles = await spawnBasalt({ ...env, BASALT_PORT: '0' }, 'scheduler,volume', 'volume service started');
  t.after(() => { roles.child.kill('SIGKILL'); });
  const url = api.url!;

  /** Runs `fn` over 0…n-1, ten at a time; the statuses answered. */
  const tenAtATime = async (n: number, fn: (i: number) => Promise<number>): Promise<number[]> => {
    const statuses: number[] = [];
    let next = 0;
    await Promise.all(Array.from({ length: 10 }, async () => {
      while (next < n) statuses.push(await fn(next++));
    }));
    return statuses;
  };
  const ids: string[] = [];
  const created = await tenAtATime(200, async (i) => {
    const r = await request(url, 'POST', `${V}/volumes`, { volume: { size: 1, name: `split-${i}` } });
    if (r.status === 202) ids.push(r.body.volume.id);
    return r.status;
  });
  assert.deepEqual([...new Set(created)], [202], 'every create answered 202');
  const statuses = async (): Promise<string[]> => ((await request(url, 'GET', `${V}/volumes/detail`)).body.volumes as Array<{ status: string }>).map((v) => v.status);
  await waitFor('every volume available', async () => {
    const now = await statuses();
    assert.ok(!now.includes('error'), 'no volume in error');
    return now.length === 200 && now.every((s) => s === 'available');
  });
  const deleted = await tenAtATime(ids.length, async (i) => (await request(url, 'DELETE', `${V}/volumes/${ids[i]}`)).status);
  assert.deepEqual([...new Set(deleted)], [202], 'every delete answered 202');
  await waitFor('every volume gone', async () => (await statuses()).length === 0);
});
