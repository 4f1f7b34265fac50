/**
 * Migration between backends (issue 12, part 5): `os-migrate_volume` and
 * `os-retype` with `migration_policy: on-demand` copy an available volume
 * to another file backend under the same id, the row moves, and the source's
 * file goes only after it; refusals name what was wrong; a server killed
 * mid-copy completes the move after a restart with nothing left behind.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileOf, poolOf, TWO_FILE_BACKENDS, typeNamed, volumeOn, writePattern } from '../helpers/backends.ts';
import { kill9, spawnBasalt } from '../helpers/process.ts';
import { FAST_TIMINGS, PROJECT, request, startTestServer, tempStateDir, testDatabase, waitFor } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const MiB = 1024 ** 2;
const MEMBER = { 'X-Auth-Token': 'bob:' + PROJECT, 'X-Project-Id': PROJECT, 'X-Roles': 'member' };
test('os-migrate_volume copies an available volume to another backend; the source file goes after the row moved', async (t) => {
  const s = await startTestServer(t, { ini: TWO_FILE_BACKENDS });
  await typeNamed(s, 'alpha');
  const v = await volumeOn(s, 'alpha', 1);
  assert.match(v.host, /@alpha#/);
  const source = fileOf(s.stateDir, 'alpha', v.id);
  writePattern(source, [0, 100 * MiB, 1024 * MiB - MiB]);
  const original = fs.readFileSync(source);
  const dest = await poolOf(s, 'beta');

  const r = await s.request('POST', `${V}/volumes/${v.id}/action`, { 'os-migrate_volume': { host: dest, force_host_copy: false, lock_volume: true } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  // Destroy data last: whenever the source's file is seen gone, the row already names the destination.
  const moved = await waitFor('migration success and the source file gone', async () => {
    const gone = !fs.existsSync(source);
    const row = (await s.request('GET', `${V}/volumes/${v.id}`)).body.volume;
    if (gone) assert.equal(row['os-vol-host-attr:host'], dest, 'the source file went before the row moved');
    assert.notEqual(row.migration_status, 'error');
    return gone && row.migration_status === 'success' ? row : undefined;
  });
  assert.equal(moved.status, 'available');
  assert.equal(moved['os-vol-mig-status-attr:migstat'], 'success');
  assert.equal(moved.id, v.id);
  assert.ok(fs.readFileSync(fileOf(s.stateDir, 'beta', v.id)).equals(original), 'the data arrived byte for byte');

  // Member callers do not see the migration status.
  const asMember = await s.request('GET', `${V}/volumes/${v.id}`, undefined, MEMBER);
  assert.equal(asMember.status, 200);
  assert.equal('migration_status' in asMember.body.volume, false);
});

test('migration refusals name what was wrong', async (t) => {
  const s = await startTestServer(t, { ini: TWO_FILE_BACKENDS });
  await typeNamed(s, 'alpha');
  const v = await volumeOn(s, 'alpha');
  const act = (body: unknown, headers?: Record<string, string>) => s.request('POST', `${V}/volumes/${v.id}/action`, body, headers);

  const same = await act({ 'os-migrate_volume': { host: v.host } });
  assert.equal(same.status, 400);
  assert.match(same.body.badRequest.message, /must be different from the volume's current host/);

  const unknown = await act({ 'os-migrate_volume': { host: 'nowhere@nothing#pool' } });
  assert.equal(unknown.status, 400);
  assert.match(unknown.body.badRequest.message, /nowhere@nothing#pool/);

  assert.equal((await act({ 'os-migrate_volume': { host: await poolOf(s, 'beta') } }, MEMBER)).status, 403, 'an admin action');

  const snap = await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: v.id } });
  await waitFor('snapshot available', async () => (await s.request('GET', `${V}/snapshots/${snap.body.snapshot.id}`)).body.snapshot.status === 'available');
  const withSnap = await act({ 'os-migrate_volume': { host: await poolOf(s, 'beta') } });
  assert.equal(withSnap.status, 400);
  assert.match(withSnap.body.badRequest.message, /has snapshots/);
  await s.request('DELETE', `${V}/snapshots/${snap.body.snapshot.id}`);
  await waitFor('snapshot gone', async () => (await s.request('GET', `${V}/snapshots/${snap.body.snapshot.id}`)).status === 404);

  assert.equal((await act({ 'os-reset_status': { status: 'error' } })).status, 202);
  const inError = await act({ 'os-migrate_volume': { host: await poolOf(s, 'beta') } });
  assert.equal(inError.status, 400);
  assert.match(inError.body.badRequest.message, /status must be available or in-use to migrate, but current status is: error/);

  const completion = await act({ 'os-migrate_volume_completion': { new_volume: v.id } });
  assert.equal(completion.status, 400);
  assert.match(completion.body.badRequest.message, /not mid-migration/);

  // A split deployment: the destination's backend is served by another process (another incarnation id). An available
  // volume moves (its source read through an export made for the move, here served by the same process); an attached one cannot.
  assert.equal((await act({ 'os-reset_status': { status: 'available' } })).status, 202);
  await s.server.db.kysely.updateTable('services').set({ instance_id: 'another-process' }).where('backend', '=', 'beta').execute();
  const apart = await act({ 'os-migrate_volume': { host: await poolOf(s, 'beta') } });
  assert.equal(apart.status, 202, JSON.stringify(apart.body));
  const exports = await s.server.db.kysely.selectFrom('volume_exports').selectAll().where('volume_id', '=', v.id).execute();
  assert.equal(exports.length, 1, 'the move made an export of its source');
  assert.equal(exports[0]!.read_only, 1);
  await waitFor('moved', async () => (await s.request('GET', `${V}/volumes/${v.id}`)).body.volume.migration_status === 'success');
  assert.deepEqual(await s.server.db.kysely.selectFrom('volume_exports').selectAll().execute(), [], 'the move\'s export went with its end');
});

test('os-retype on-demand moves the volume to a backend of the new type; never refuses', async (t) => {
  const s = await startTestServer(t, { ini: TWO_FILE_BACKENDS });
  await typeNamed(s, 'alpha');
  await typeNamed(s, 'beta');
  const v = await volumeOn(s, 'alpha');
  writePattern(fileOf(s.stateDir, 'alpha', v.id), [5 * MiB]);
  const original = fs.readFileSync(fileOf(s.stateDir, 'alpha', v.id));

  const never = await s.request('POST', `${V}/volumes/${v.id}/action`, { 'os-retype': { new_type: 'beta', migration_policy: 'never' } }, MEMBER);
  assert.equal(never.status, 400);
  assert.match(never.body.badRequest.message, /migration_policy 'never' forbids/);

  // Waits for the destination backend's first report (readiness, not a guess): on a busy
  // machine it can come after the volume on alpha is available, and without it there is
  // rightly nowhere to go.
  await poolOf(s, 'beta');
  const r = await s.request('POST', `${V}/volumes/${v.id}/action`, { 'os-retype': { new_type: 'beta', migration_policy: 'on-demand' } }, MEMBER);
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const moved = await waitFor('retyped', async () => {
    const row = (await s.request('GET', `${V}/volumes/${v.id}`)).body.volume;
    return row.volume_type === 'beta' ? row : undefined;
  });
  assert.equal(moved.migration_status, 'success');
  assert.match(moved['os-vol-host-attr:host'], /@beta#/);
  assert.equal(moved.status, 'available');
  assert.ok(fs.readFileSync(fileOf(s.stateDir, 'beta', v.id)).equals(original));
  await waitFor('source file removed', async () => !fs.existsSync(fileOf(s.stateDir, 'alpha', v.id)));

  // The per-type quota moved with the type.
  const usage = (await s.request('GET', `${V}/os-quota-sets/${PROJECT}?usage=true`)).body.quota_set;
  assert.equal(usage.volumes_beta.in_use, 1);
  assert.equal(usage.volumes_alpha.in_use, 0);
});

test('a server killed mid-copy completes the migration after a restart, leaving nothing behind', { timeout: 120_000 }, async (t) => {
  const stateDir = tempStateDir(t);
  const database = await testDatabase(stateDir);
  const ini = path.join(stateDir, 'basalt.ini');
  fs.writeFileSync(ini, TWO_FILE_BACKENDS);
  const spawn = async (): Promise<{ child: ChildProcess; url: string }> => {
    const { child, url } = await spawnBasalt({ ...FAST_TIMINGS, BASALT_CONFIG: ini, BASALT_STATE_DIR: stateDir, BASALT_PORT: '0', BASALT_LOG_LEVEL: 'info', ...database.env });
    t.after(() => { child.kill('SIGKILL'); });
    return { child, url: url! };
  };
  const first = await spawn();
  const api = (url: string, method: string, p: string, body?: unknown) => request(url, method, p, body);
  assert.equal((await api(first.url, 'POST', `${V}/types`, { volume_type: { name: 'alpha', extra_specs: { volume_backend_name: 'alpha' } } })).status, 200);
  const id = (await api(first.url, 'POST', `${V}/volumes`, { volume: { size: 2, volume_type: 'alpha' } })).body.volume.id as string;
  await waitFor('available', async () => (await api(first.url, 'GET', `${V}/volumes/${id}`)).body.volume.status === 'available');
  const source = fileOf(stateDir, 'alpha', id);
  const offsets = Array.from({ length: 400 }, (_, i) => i * 4 * MiB);
  writePattern(source, offsets);
  const dest = await waitFor('beta pool', async () => {
    const pools = (await api(first.url, 'GET', `${V}/scheduler-stats/get_pools`)).body.pools as Array<{ name: string }>;
    return pools.find((p) => p.name.includes('@beta#'))?.name;
  });

  assert.equal((await api(first.url, 'POST', `${V}/volumes/${id}/action`, { 'os-migrate_volume': { host: dest } })).status, 202);
  const target = fileOf(stateDir, 'beta', id);
  await waitFor('the copy started', async () => fs.existsSync(target));
  await kill9(first.child);
  const [row] = await database.query<{ status: string; migration_status: string | null }>(`select status, migration_status from volumes where id = '${id}'`);
  t.diagnostic(`killed with the volume ${row!.status}, migration ${row!.migration_status}`);

  const second = await spawn();
  const settled = await waitFor('the migration settled', async () => {
    const v = (await api(second.url, 'GET', `${V}/volumes/${id}`)).body.volume;
    return v.status === 'available' && ['success', 'error'].includes(v.migration_status) ? v : undefined;
  }, 60_000);
  if (settled.migration_status === 'success') {
    assert.equal(settled['os-vol-host-attr:host'], dest);
    await waitFor('source file removed', async () => !fs.existsSync(source));
    const fd = fs.openSync(target, 'r');
    try {
      for (const at of offsets) {
        const b = Buffer.alloc(MiB);
        fs.readSync(fd, b, 0, MiB, at);
        assert.ok(b.every((x) => x === (at / MiB) % 251 + 1), `data at ${at} arrived`);
      }
    } finally { fs.closeSync(fd); }
  } else {
    // Rolled back: the volume is where it was and the destination holds nothing.
    assert.match(settled['os-vol-host-attr:host'], /@alpha#/);
    assert.equal(fs.existsSync(target), false);
  }
  assert.deepEqual(fs.readdirSync(path.join(stateDir, 'volumes', 'alpha')).filter((f) => f.startsWith('volume-')).length + fs.readdirSync(path.join(stateDir, 'volumes', 'beta')).filter((f) => f.startsWith('volume-')).length, 1, 'one copy of the volume, no leftover');
  const [leased] = await database.query<{ n: number }>("select cast(count(*) as integer) as n from jobs where state in ('queued','running')");
  assert.equal(leased!.n, 0, 'no job left');
});


test("an admin's maintenance is not a stuck migration: the sweeper leaves it", async (t) => {
  const s = await startTestServer(t, { ini: TWO_FILE_BACKENDS });
  await typeNamed(s, 'alpha');
  const v = await volumeOn(s, 'alpha');
  assert.equal((await s.request('POST', `${V}/volumes/${v.id}/action`, { 'os-reset_status': { status: 'maintenance' } })).status, 202);
  // Long past the sweeper's grace, as a stuck row would be: the rule must still leave it.
  await s.server.db.kysely.updateTable('volumes').set({ updated_at: '2000-01-01T00:00:00.000Z' }).where('id', '=', v.id).execute();
  await s.server.sweeper.sweepOnce();
  const row = (await s.request('GET', `${V}/volumes/${v.id}`)).body.volume;
  assert.equal(row.status, 'maintenance');
  assert.equal(row.migration_status, null);
});

test('a copy left on the destination by an earlier move does not show through the holes of the new copy', async (t) => {
  const s = await startTestServer(t, { ini: TWO_FILE_BACKENDS });
  await typeNamed(s, 'alpha');
  const v = await volumeOn(s, 'alpha');
  writePattern(fileOf(s.stateDir, 'alpha', v.id), [0]);
  const stale = fileOf(s.stateDir, 'beta', v.id);
  fs.writeFileSync(stale, Buffer.alloc(0));
  fs.truncateSync(stale, 1024 * MiB);
  writePattern(stale, [8 * MiB, 64 * MiB]);
  const original = fs.readFileSync(fileOf(s.stateDir, 'alpha', v.id));
  assert.equal((await s.request('POST', `${V}/volumes/${v.id}/action`, { 'os-migrate_volume': { host: await poolOf(s, 'beta') } })).status, 202);
  await waitFor('moved', async () => (await s.request('GET', `${V}/volumes/${v.id}`)).body.volume.migration_status === 'success');
  assert.ok(fs.readFileSync(stale).equals(original), 'the destination holds the source byte for byte');
});
