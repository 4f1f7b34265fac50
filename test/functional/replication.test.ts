/**
 * Replication (issue 16), asynchronous mode between two file backends of one
 * process: backend `alpha` names `beta` as its target (`replication_device`).
 * A volume of a type with `replication_enabled='<is> True'` goes to alpha
 * only, its points are shipped to beta's copy through beta's NBD export with
 * TLS-PSK, and an admin fails alpha over to beta and back: the data follows,
 * the rows follow, and what alpha held without a copy goes to error.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileOf, TWO_FILE_BACKENDS, writePattern } from '../helpers/backends.ts';
import { fileDigest } from '../helpers/file-digest.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const MiB = 1024 ** 2;
const GiB = 1024 * MiB;

/** The two backends of the migration tests; alpha names beta as its replication target. */
const CONFIG = TWO_FILE_BACKENDS.replace('volume_backend_name = alpha', 'volume_backend_name = alpha\nreplication_device = backend_id:beta');

const REPLICATED = { replication_enabled: '<is> True', 'basalt:replication_mode': 'async', 'basalt:replication_rpo_seconds': '1' };

async function makeType(s: TestServer, name: string, extra_specs: Record<string, string>): Promise<void> {
  const r = await s.request('POST', `${V}/types`, { volume_type: { name, extra_specs } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

async function createVolume(s: TestServer, type: string): Promise<string> {
  const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1, volume_type: type } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return r.body.volume.id as string;
}

async function replication(s: TestServer, id: string): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await s.request('GET', `${V}/volumes/${id}/replication`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.replication;
}

/** Waits for a point of `id` taken after `afterMs` to have shipped. */
async function shippedAfter(s: TestServer, id: string, afterMs: number): Promise<void> {
  await waitFor(`a point of ${id} after ${new Date(afterMs).toISOString()}`, async () => {
    const r = await replication(s, id);
    return r.state === 'enabled' && r.last_point_at && Date.parse(`${r.last_point_at}Z`) > afterMs;
  });
}

async function volumeService(s: TestServer, backend: string): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await s.request('GET', `${V}/os-services?binary=cinder-volume`);
  return (r.body.services as Array<{ host: string }>).find((x) => x.host.endsWith(`@${backend}`));
}

test('replicated volumes: placement, asynchronous points over the NBD export, failover and failback', async (t) => {
  // The replicator's log says what each point shipped.
  const shipments: Array<{ volume_id: string; bytes: number; full: boolean }> = [];
  const logLines = { push: (line: string) => { if (line.includes('replication point shipped')) shipments.push(JSON.parse(line)); return 0; } } as unknown as string[];
  const s = await startTestServer(t, { ini: CONFIG, logLines });

  // Types: replication specs are checked when written.
  const bad = await s.request('POST', `${V}/types`, { volume_type: { name: 'bad', extra_specs: { ...REPLICATED, 'basalt:replication_mode': 'semi' } } });
  assert.equal(bad.status, 400);
  assert.match(bad.body.badRequest.message, /basalt:replication_mode/);
  const badRpo = await s.request('POST', `${V}/types`, { volume_type: { name: 'bad', extra_specs: { ...REPLICATED, 'basalt:replication_rpo_seconds': '0' } } });
  assert.equal(badRpo.status, 400);
  assert.match(badRpo.body.badRequest.message, /basalt:replication_rpo_seconds/);
  await makeType(s, 'repl', REPLICATED);
  await makeType(s, 'plain-alpha', { volume_backend_name: 'alpha' });
  // A type asking for replication on a backend without a target: no valid backend, as Cinder.
  await makeType(s, 'repl-beta', { ...REPLICATED, volume_backend_name: 'beta' });

  // Services and capabilities say which backend replicates where.
  const alpha = await waitFor('alpha reported', () => volumeService(s, 'alpha'));
  assert.equal(alpha.replication_status, 'enabled');
  assert.equal(alpha.active_backend_id, null);
  assert.equal((await volumeService(s, 'beta')).replication_status, 'disabled');
  const caps = await s.request('GET', `${V}/capabilities/${alpha.host}`);
  assert.deepEqual(caps.body.replication_targets, ['beta']);

  const nowhere = await createVolume(s, 'repl-beta');
  const failed = await waitForStatus(s, nowhere, 'error');
  assert.equal(failed.replication_status, 'copying');
  const msgs = await s.request('GET', `${V}/messages`, undefined, { 'OpenStack-API-Version': 'volume 3.3' });
  assert.ok((msgs.body.messages as Array<{ resource_uuid: string }>).some((m) => m.resource_uuid === nowhere), 'the failed placement has a user message');

  const id = await createVolume(s, 'repl');
  const plain = await createVolume(s, 'plain-alpha');
  const v = await waitForStatus(s, id, 'available');
  assert.match(v['os-vol-host-attr:host'], /@alpha#/);
  await waitForStatus(s, plain, 'available');
  assert.equal((await s.request('GET', `${V}/volumes/${plain}`)).body.volume.replication_status, 'disabled');

  // The first point: the copy on beta is the volume, read from its allocated extents only.
  writePattern(fileOf(s.stateDir, 'alpha', id), [0, 300 * MiB], 2 * MiB);
  const t0 = Date.now();
  await shippedAfter(s, id, t0);
  await waitFor('replication_status enabled', async () => (await s.request('GET', `${V}/volumes/${id}`)).body.volume.replication_status === 'enabled');
  let r = await replication(s, id);
  assert.match(r.secondary.host, /@beta#/);
  assert.equal(r.mode, 'async');
  assert.ok(r.bytes_shipped >= 4 * MiB && r.bytes_shipped < 64 * MiB, `shipped ${r.bytes_shipped} bytes for 4 MiB of data`);
  assert.equal(await fileDigest(fileOf(s.stateDir, 'beta', id), GiB), await fileDigest(fileOf(s.stateDir, 'alpha', id), GiB));

  // Later points ship what the driver says changed: on a filesystem without reflinks (copies share no
  // block) that is every allocated extent, on one with them only the changed ones; never the holes.
  writePattern(fileOf(s.stateDir, 'alpha', id), [512 * MiB], MiB);
  const t1 = Date.now();
  await shippedAfter(s, id, t1);
  const logged = shipments.filter((x) => x.volume_id === id && !x.full);
  assert.ok(logged.length > 0 && logged.every((x) => x.bytes <= 5 * MiB), `points after the first ship at most the allocated 5 MiB: ${JSON.stringify(logged)}`);
  assert.equal(await fileDigest(fileOf(s.stateDir, 'beta', id), GiB), await fileDigest(fileOf(s.stateDir, 'alpha', id), GiB));

  // Bad failovers: Cinder's 400s.
  const put = (path: string, body: unknown, version = '3.0') => s.request('PUT', `${V}/os-services/${path}`, body, { 'OpenStack-API-Version': `volume ${version}` });
  assert.equal((await put('failover_host', { host: 'nowhere@alpha', backend_id: 'beta' })).status, 400);
  const unknown = await put('failover_host', { host: alpha.host, backend_id: 'gamma' });
  assert.equal(unknown.status, 400);
  assert.match(unknown.body.badRequest.message, /gamma is not a replication target/);
  assert.match((await put('failover_host', { host: alpha.host, backend_id: 'default' })).body.badRequest.message, /not failed over/);
  assert.equal((await put('failover', { host: alpha.host, cluster: alpha.cluster ?? alpha.host, backend_id: 'beta' }, '3.26')).status, 400, 'host and cluster both');
  assert.equal((await put('failover', { cluster: alpha.host, backend_id: 'beta' }, '3.25')).status, 404, 'failover is 3.26');
  assert.equal((await put('failover_host', { host: alpha.host, backend_id: 'beta', extra: 1 })).status, 400);

  // Failover: the volume is served from beta's copy; the volume without one goes to error.
  assert.equal((await put('failover', { cluster: alpha.host, backend_id: 'beta' }, '3.26')).status, 202);
  await waitFor('alpha failed over', async () => (await volumeService(s, 'alpha')).replication_status === 'failed-over');
  const over = await volumeService(s, 'alpha');
  assert.equal(over.active_backend_id, 'beta');
  assert.equal(over.status, 'disabled');
  const moved = (await s.request('GET', `${V}/volumes/${id}`)).body.volume;
  assert.match(moved['os-vol-host-attr:host'], /@beta#/);
  assert.equal(moved.replication_status, 'failed-over');
  const lost = (await s.request('GET', `${V}/volumes/${plain}`)).body.volume;
  assert.deepEqual([lost.status, lost.replication_status], ['error', 'not-capable']);
  assert.match((await put('failover_host', { host: alpha.host, backend_id: 'beta' })).body.badRequest.message, /failed over already/);

  // Written while failed over (on beta) and diverged on alpha after its last point: failback ships both back.
  writePattern(fileOf(s.stateDir, 'beta', id), [700 * MiB], MiB);
  writePattern(fileOf(s.stateDir, 'alpha', id), [900 * MiB], MiB);
  await waitFor('beta shipping back to alpha', async () => (await replication(s, id)).state === 'enabled');
  assert.equal((await put('failover_host', { host: alpha.host, backend_id: 'default' })).status, 202);
  await waitFor('alpha failed back', async () => (await volumeService(s, 'alpha')).replication_status === 'enabled');
  const back = (await s.request('GET', `${V}/volumes/${id}`)).body.volume;
  assert.match(back['os-vol-host-attr:host'], /@alpha#/);
  assert.equal(back.replication_status, 'enabled');
  assert.equal((await volumeService(s, 'alpha')).status, 'enabled');
  assert.equal(await fileDigest(fileOf(s.stateDir, 'alpha', id), GiB), await fileDigest(fileOf(s.stateDir, 'beta', id), GiB));
  const shipped = await fileDigest(fileOf(s.stateDir, 'alpha', id), GiB);
  // Alpha's own divergence (at 900 MiB) was overwritten by beta's data (zeros there).
  const zeros = Buffer.alloc(MiB);
  const fd = (await import('node:fs')).openSync(fileOf(s.stateDir, 'alpha', id), 'r');
  const at900 = Buffer.alloc(MiB);
  (await import('node:fs')).readSync(fd, at900, 0, MiB, 900 * MiB);
  (await import('node:fs')).closeSync(fd);
  assert.ok(at900.equals(zeros), 'what alpha took after its last point is gone');
  assert.ok(shipped);
});
