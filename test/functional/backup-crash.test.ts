/**
 * Backups and crashes (issue 15): `kill -9` of `basalt server` half way
 * through a backup, then a restart: the backup is resumed (the restarted
 * service takes over its dead incarnation's lease), ends available and
 * restores the data byte for byte; the volume leaves `backing-up`. And the
 * sweeper: a backup whose job is gone is failed with a user message, and its
 * volume given back. And split roles: no backup service in the process that
 * serves the backend means a 503, with nothing half-done.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileDigest } from '../helpers/file-digest.ts';
import { kill9, spawnBasalt } from '../helpers/process.ts';
import { FAST_TIMINGS, PROJECT, request, startTestServer, tempStateDir, testDatabase, waitFor, waitForStatus } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const MiB = 1024 ** 2;



test('kill -9 half way through a backup, restart: the backup is resumed and restores byte for byte', { timeout: 180_000 }, async (t) => {
  const stateDir = tempStateDir(t);
  const database = await testDatabase(stateDir);
  const env = { ...FAST_TIMINGS, BASALT_STATE_DIR: stateDir, BASALT_PORT: '0', BASALT_LOG_LEVEL: 'info', ...database.env };
  const first = await spawnBasalt(env);
  t.after(() => { first.child.kill('SIGKILL'); });
  const url = first.url!;
  const created = await request(url, 'POST', `${V}/volumes`, { volume: { size: 1 } });
  const vol = created.body.volume.id as string;
  await waitFor('volume', async () => (await request(url, 'GET', `${V}/volumes/${vol}`)).body.volume.status === 'available');
  const file = path.join(stateDir, 'volumes', 'file', `volume-${vol}`);
  const fh = await fs.promises.open(file, 'r+');
  for (let at = 0; at < 384 * MiB; at += 16 * MiB) await fh.write(randomBytes(16 * MiB), 0, 16 * MiB, at);
  await fh.close();
  const data = await fileDigest(file, 1024 * MiB);

  const b = await request(url, 'POST', `${V}/backups`, { backup: { volume_id: vol } });
  assert.equal(b.status, 202);
  // Packs of 8 MiB, 512 blocks of 16 KiB each, and an index object beside each pack once it is whole.
  const index = path.join(stateDir, 'backups', 'volumes', vol, 'index');
  const count = (): number => (fs.existsSync(index) ? fs.readdirSync(index).filter((f) => /^[0-9a-f]{64}$/.test(f)).length : 0);
  await waitFor('some packs stored', async () => count() >= 2, 60_000);
  await kill9(first.child);
  const before = count();
  assert.ok(before < 48, `the kill came half way (${before} of 48 packs stored)`);
  const [row] = await database.query<{ status: string }>(`select status from backups where id = '${b.body.backup.id}'`);
  assert.equal(row!.status, 'creating');

  const second = await spawnBasalt(env);
  t.after(() => { second.child.kill('SIGKILL'); });
  const url2 = second.url!;
  const done = await waitFor('backup available', async () => {
    const x = (await request(url2, 'GET', `${V}/backups/${b.body.backup.id}`)).body.backup;
    assert.notEqual(x.status, 'error', x.fail_reason);
    return x.status === 'available' && x;
  }, 120_000);
  assert.equal(done.object_count, 2 * (48 - before) + 1, 'the resumed run stored only the packs (and their indexes) the first did not, and the manifest');
  await waitFor('volume given back', async () => (await request(url2, 'GET', `${V}/volumes/${vol}`)).body.volume.status === 'available');
  const r = await request(url2, 'POST', `${V}/backups/${b.body.backup.id}/restore`, { restore: {} });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await waitFor('restored', async () => (await request(url2, 'GET', `${V}/volumes/${r.body.restore.volume_id}`)).body.volume.status === 'available', 120_000);
  assert.equal(await fileDigest(path.join(stateDir, 'volumes', 'file', `volume-${r.body.restore.volume_id}`), 1024 * MiB), data);
});

test('the sweeper fails a backup whose job is gone and gives its volume back', async (t) => {
  const s = await startTestServer(t);
  const v = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } });
  await waitForStatus(s, v.body.volume.id, 'available');
  const b = await s.request('POST', `${V}/backups`, { backup: { volume_id: v.body.volume.id } });
  await waitFor('backup', async () => (await s.request('GET', `${V}/backups/${b.body.backup.id}`)).body.backup.status === 'available');
  // As if the process died after the request and its job was lost: the rows say creating / backing-up, no job does.
  const db = s.server.db.kysely;
  const long = '2000-01-01T00:00:00.000Z';
  await db.updateTable('backups').set({ status: 'creating', updated_at: long }).where('id', '=', b.body.backup.id).execute();
  await db.updateTable('volumes').set({ status: 'backing-up', updated_at: long }).where('id', '=', v.body.volume.id).execute();
  await s.server.sweeper.sweepOnce();
  const failed = (await s.request('GET', `${V}/backups/${b.body.backup.id}`)).body.backup;
  assert.equal(failed.status, 'error');
  assert.match(failed.fail_reason, /create backup: The operation was interrupted/);
  assert.equal((await s.request('GET', `${V}/volumes/${v.body.volume.id}`)).body.volume.status, 'available');
  const messages = (await s.request('GET', `${V}/messages`, undefined, { 'OpenStack-API-Version': 'volume 3.3' })).body.messages as Array<{ resource_uuid: string; resource_type: string }>;
  assert.ok(messages.some((m) => m.resource_uuid === b.body.backup.id && m.resource_type === 'BACKUP'));
});

test('without a backup service in the process serving the backend, a backup is refused with 503', { timeout: 60_000 }, async (t) => {
  const stateDir = tempStateDir(t);
  const database = await testDatabase(stateDir);
  const env = { ...FAST_TIMINGS, BASALT_STATE_DIR: stateDir, BASALT_PORT: '0', BASALT_LOG_LEVEL: 'info', ...database.env };
  const main = await spawnBasalt(env, 'api,scheduler,volume');
  t.after(() => { main.child.kill('SIGKILL'); });
  const url = main.url!;
  const v = await request(url, 'POST', `${V}/volumes`, { volume: { size: 1 } });
  await waitFor('volume', async () => (await request(url, 'GET', `${V}/volumes/${v.body.volume.id}`)).body.volume.status === 'available');
  const none = await request(url, 'POST', `${V}/backups`, { backup: { volume_id: v.body.volume.id } });
  assert.equal(none.status, 503);
  assert.match(none.body.serviceUnavailable.message, /Service cinder-backup could not be found/);
  // A backup role in another process, serving no backend, cannot read the volume either.
  const alone = await spawnBasalt({ ...env, BASALT_PORT: '0' }, 'backup', 'backup service started');
  t.after(() => { alone.child.kill('SIGKILL'); });
  const still = await request(url, 'POST', `${V}/backups`, { backup: { volume_id: v.body.volume.id } });
  assert.equal(still.status, 503);
  assert.equal((await request(url, 'GET', `${V}/volumes/${v.body.volume.id}`)).body.volume.status, 'available', 'nothing half-done');
});
