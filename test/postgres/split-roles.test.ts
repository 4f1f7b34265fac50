/**
 * Split roles on one PostgreSQL: `--roles api` twice (two ports), one
 * `--roles scheduler`, one `--roles volume`, as separate processes. Work
 * written through either API is done by the other processes, woken by
 * LISTEN/NOTIFY (polling is set to a slow 20 s to prove it).
 */
import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { startPostgres } from '../helpers/postgres.ts';
import { spawnBasalt } from '../helpers/process.ts';
import { FAST_TIMINGS, PROJECT, request, tempStateDir, waitFor } from '../helpers/server.ts';

const run = promisify(execFile);
const V = `/v3/${PROJECT}`;

test('api ×2, scheduler and volume as separate processes on PostgreSQL', { timeout: 120_000 }, async (t) => {
  const pg = await startPostgres();
  const database = await pg.createDatabase();
  const stateDir = tempStateDir(t);
  const env = {
    ...FAST_TIMINGS, BASALT_JOB_POLL_INTERVAL_SECONDS: '20', BASALT_STATE_DIR: stateDir,
    BASALT_DATABASE__CONNECTION: database, BASALT_PORT: '0', BASALT_NBD_PORT: '0', BASALT_LOG_LEVEL: 'info',
  };
  const procs: ChildProcess[] = [];
  t.after(async () => {
    for (const p of procs) p.kill('SIGKILL');
  });
  t.after(() => pg.stop()); // after the processes: hooks run in the order they were added
  const volume = await spawnBasalt(env, 'volume', 'volume service started');
  procs.push(volume.child);
  const scheduler = await spawnBasalt(env, 'scheduler', 'scheduler started');
  procs.push(scheduler.child);
  const a = await spawnBasalt(env, 'api');
  procs.push(a.child);
  const b = await spawnBasalt(env, 'api');
  procs.push(b.child);
  assert.notEqual(a.url, b.url);

  const started = Date.now();
  const created = await request(a.url!, 'POST', `${V}/volumes`, { volume: { size: 1, name: 'split' } });
  assert.equal(created.status, 202);
  const id = created.body.volume.id;
  await waitFor('available through the other API', async () => (await request(b.url!, 'GET', `${V}/volumes/${id}`)).body.volume.status === 'available');
  assert.ok(Date.now() - started < 10_000, 'woken by NOTIFY, not by the 20 s poll');

  const services = (await request(b.url!, 'GET', `${V}/os-services`)).body.services;
  assert.deepEqual(services.map((s: { binary: string; state: string }) => `${s.binary}:${s.state}`).sort(), ['cinder-scheduler:up', 'cinder-volume:up']);

  assert.equal((await request(b.url!, 'POST', `${V}/volumes/${id}/action`, { 'os-extend': { new_size: 2 } })).status, 202);
  await waitFor('extended', async () => (await request(a.url!, 'GET', `${V}/volumes/${id}`)).body.volume.size === 2);

  const att = await request(a.url!, 'POST', `${V}/attachments`, { attachment: { volume_uuid: id, connector: { host: 'h' } } }, { 'OpenStack-API-Version': 'volume 3.54' });
  assert.equal(att.status, 200, JSON.stringify(att.body));
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 5 0 4096', '-c', 'read -P 5 0 4096', att.body.attachment.connection_info.data.uri]);
  assert.equal((await request(b.url!, 'DELETE', `${V}/attachments/${att.body.attachment.id}`, undefined, { 'OpenStack-API-Version': 'volume 3.54' })).status, 200);

  assert.equal((await request(b.url!, 'DELETE', `${V}/volumes/${id}`)).status, 202);
  await waitFor('deleted', async () => (await request(a.url!, 'GET', `${V}/volumes/${id}`)).status === 404);
});
