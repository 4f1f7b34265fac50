/**
 * Replication (issue 16), asynchronous mode between two file backends of one
 * process: backend `alpha` names `beta` as its target (`replication_device`).
 * A volume of a type with `replication_enabled='<is> True'` goes to alpha
 * only, its points are shipped to beta's copy through beta's NBD export with
 * TLS-PSK, and an admin fails alpha over to beta and back: the data follows,
 * the rows follow, and what alpha held without a copy goes to error.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { randomUUID } from 'node:crypto';
import { openCoordinator } from '../../src/coordination/index.ts';
import { bytesOf, fileOf, REPLICATING_BACKENDS, writePattern } from '../helpers/backends.ts';
import { fileDigest } from '../helpers/file-digest.ts';
import { scrape } from '../helpers/metrics.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';
import { streamedEvents } from '../helpers/webhook-receiver.ts';

const run = promisify(execFile);
const V = `/v3/${PROJECT}`;
const MiB = 1024 ** 2;
const GiB = 1024 * MiB;

/** The two backends of the migration tests; alpha names beta as its replication target. */
const CONFIG = REPLICATING_BACKENDS;

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

  // Freeze and thaw name a cluster from 3.26, as failover does.
  assert.equal((await put('freeze', { cluster: alpha.host }, '3.26')).status, 200);
  assert.equal((await volumeService(s, 'alpha')).frozen, true);
  assert.equal((await put('thaw', { cluster: alpha.host }, '3.26')).status, 200);
  assert.equal((await volumeService(s, 'alpha')).frozen, false);
  assert.equal((await put('freeze', { cluster: alpha.host }, '3.25')).status, 400, 'cluster is 3.26');
  assert.equal((await put('freeze', { host: alpha.host, cluster: alpha.host }, '3.26')).status, 400, 'one of host and cluster');

  // Alpha takes a write after its last point (the volume's lock held, no point ships it) and then fails:
  // its copy diverges from beta's, as a primary's does that dies with writes not yet shipped. (Written
  // after the failover, it raced the reverse copy's preparation, which reads alpha's divergence then.)
  const coordinator = openCoordinator(s.server.config.coordination.backend_url);
  t.after(() => coordinator.close());
  const shipping = await coordinator.lock(`volume-${id}`, 30_000);
  writePattern(fileOf(s.stateDir, 'alpha', id), [900 * MiB], MiB);

  // Failover: the volume is served from beta's copy; the volume without one goes to error.
  assert.equal((await put('failover', { cluster: alpha.host, backend_id: 'beta' }, '3.26')).status, 202);
  await waitFor('alpha failed over', async () => (await volumeService(s, 'alpha')).replication_status === 'failed-over');
  await shipping.release();
  const over = await volumeService(s, 'alpha');
  assert.equal(over.active_backend_id, 'beta');
  assert.equal(over.status, 'disabled');
  const moved = (await s.request('GET', `${V}/volumes/${id}`)).body.volume;
  assert.match(moved['os-vol-host-attr:host'], /@beta#/);
  assert.equal(moved.replication_status, 'failed-over');
  const lost = (await s.request('GET', `${V}/volumes/${plain}`)).body.volume;
  assert.deepEqual([lost.status, lost.replication_status], ['error', 'not-capable']);
  assert.match((await put('failover_host', { host: alpha.host, backend_id: 'beta' })).body.badRequest.message, /failed over already/);

  // Written while failed over (on beta), and alpha's divergence: failback ships both back.
  writePattern(fileOf(s.stateDir, 'beta', id), [700 * MiB], MiB);
  await waitFor('beta shipping back to alpha', async () => (await replication(s, id)).state === 'enabled');
  assert.equal((await put('failover_host', { host: alpha.host, backend_id: 'default' })).status, 202);
  await waitFor('alpha failed back', async () => (await volumeService(s, 'alpha')).replication_status === 'enabled');
  const back = (await s.request('GET', `${V}/volumes/${id}`)).body.volume;
  assert.match(back['os-vol-host-attr:host'], /@alpha#/);
  assert.equal(back.replication_status, 'enabled');
  assert.equal((await volumeService(s, 'alpha')).status, 'enabled');
  assert.equal(await fileDigest(fileOf(s.stateDir, 'alpha', id), GiB), await fileDigest(fileOf(s.stateDir, 'beta', id), GiB));
  // Alpha's own divergence (at 900 MiB) was overwritten by beta's data (zeros there).
  assert.ok(bytesOf(fileOf(s.stateDir, 'alpha', id), 900 * MiB, MiB).equals(Buffer.alloc(MiB)), 'what alpha took after its last point is gone');

  // The project's event stream tells each move, and why the volume without a copy failed (issue 17 part 2).
  const events = await streamedEvents(s, PROJECT);
  const of = (vol: string, name: string) => events.filter((e) => e.data.resource_id === vol && e.event === name).map((e) => e.data.detail);
  const [failover] = of(id, 'volume.failover');
  assert.equal(failover?.backend_id, 'beta');
  assert.match(failover?.from_cluster, /@alpha$/);
  assert.match(failover?.to_cluster, /@beta$/);
  assert.equal(failover?.replication_status, 'failed-over');
  const [failback] = of(id, 'volume.failback');
  assert.deepEqual([failback?.backend_id, /@beta$/.test(failback?.from_cluster), /@alpha$/.test(failback?.to_cluster)], ['default', true, true]);
  assert.ok(events.findIndex((e) => e.event === 'volume.failover') < events.findIndex((e) => e.event === 'volume.failback'));
  const lostEvent = events.find((e) => e.data.resource_id === plain && e.event === 'volume.status' && e.data.to_status === 'error');
  assert.equal(lostEvent?.data.from_status, 'available');
  assert.equal(lostEvent?.data.detail?.reason, 'failover volume: The volume\'s backend was failed over and the volume has no copy on the target.');
  assert.equal(lostEvent?.data.detail?.message_event_id, 'VOLUME_VOLUME_025_033');
});

const CONNECTOR = { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.test', mode: 'rw' };


test('synchronous replication: a write through the export is on the secondary when it is acknowledged; a lost secondary fails writes until it is back', async (t) => {
  const s = await startTestServer(t, { ini: CONFIG });
  await makeType(s, 'sync', { ...REPLICATED, 'basalt:replication_mode': 'sync' });
  const id = await createVolume(s, 'sync');
  await waitForStatus(s, id, 'available');
  await waitFor('the mirror in step', async () => (await s.request('GET', `${V}/volumes/${id}`)).body.volume.replication_status === 'enabled');
  assert.equal((await replication(s, id)).mode, 'sync');

  const MV = { 'OpenStack-API-Version': 'volume 3.54' };
  const a = await waitFor('an attachment', async () => {
    const r = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: id, connector: CONNECTOR } }, MV);
    if (r.status === 400 && /try again later/.test(r.body.badRequest?.message)) return undefined;
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body.attachment;
  });
  assert.equal((await s.request('POST', `${V}/attachments/${a.id}/action`, { 'os-complete': null }, MV)).status, 204);
  const uri = a.connection_info.data.uri as string;

  // Acknowledged means on both copies: no point to wait for.
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 1M', uri]);
  assert.ok(bytesOf(fileOf(s.stateDir, 'beta', id), MiB, MiB).equals(Buffer.alloc(MiB, 0x5a)), 'the write is on the secondary when acknowledged');
  assert.ok(bytesOf(fileOf(s.stateDir, 'alpha', id), MiB, MiB).equals(Buffer.alloc(MiB, 0x5a)));

  // The secondary's export goes away: writes fail (EIO), the volume says so, and a user message too.
  const x = await s.server.db.kysely.selectFrom('volume_exports').selectAll().where('volume_id', '=', id).where('purpose', '=', 'replication').executeTakeFirstOrThrow();
  await s.server.db.kysely.deleteFrom('volume_exports').where('export_name', '=', x.export_name).execute();
  // Its connection dropped as any member drops one: a durable export.fence job for beta's volume service.
  const at = new Date().toISOString();
  await s.server.db.kysely.insertInto('jobs').values({
    id: randomUUID(), kind: 'export.fence', payload_version: 1, payload: JSON.stringify({ exportName: x.export_name }), target: `member:${(await volumeService(s, 'beta')).host}`,
    resource_type: 'attachment', resource_id: id, state: 'queued', attempts: 0, max_attempts: 5, lease_owner: null, lease_expires_at: null,
    not_before: 0, last_error: null, request_id: null, created_at: at, updated_at: at,
  }).execute();
  const failedWrite = await waitFor('a write to fail', async () => {
    const r = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 4M 64k', uri]).catch((e: { stdout: string; stderr: string }) => e);
    return /Input\/output error|failed/i.test(`${r.stdout}${r.stderr}`) ? r : undefined;
  });
  assert.ok(failedWrite);
  await waitFor('replication_status error', async () => (await s.request('GET', `${V}/volumes/${id}`)).body.volume.replication_status === 'error');
  const msgs = await s.request('GET', `${V}/messages`, undefined, { 'OpenStack-API-Version': 'volume 3.3' });
  assert.ok((msgs.body.messages as Array<{ resource_uuid: string; user_message: string }>).some((m) => m.resource_uuid === id && /secondary copy/.test(m.user_message)));

  // It comes back: the mirror is rebuilt by itself, and writes are on both copies again.
  await s.server.db.kysely.insertInto('volume_exports').values(x).execute();
  await waitFor('the mirror in step again', async () => (await s.request('GET', `${V}/volumes/${id}`)).body.volume.replication_status === 'enabled');
  await waitFor('a write to succeed', async () => {
    const r = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 8M 64k', uri]).catch(() => undefined);
    return r && !/error|failed/i.test(`${r.stdout}${r.stderr}`);
  });
  assert.ok(bytesOf(fileOf(s.stateDir, 'beta', id), 8 * MiB, 64 * 1024).equals(Buffer.alloc(64 * 1024, 0x77)));
  assert.ok(bytesOf(fileOf(s.stateDir, 'beta', id), MiB, MiB).equals(Buffer.alloc(MiB, 0x5a)));

  // Failover with the volume attached: the host's export name now serves beta's copy, which has every acknowledged write.
  const alpha = await volumeService(s, 'alpha');
  const put = (body: unknown) => s.request('PUT', `${V}/os-services/failover_host`, body);
  assert.equal((await put({ host: alpha.host, backend_id: 'beta' })).status, 202);
  await waitFor('alpha failed over', async () => (await volumeService(s, 'alpha')).replication_status === 'failed-over');
  assert.equal((await s.request('GET', `${V}/volumes/${id}`)).body.volume.status, 'in-use', 'the attachment stays');
  const shown = (await s.request('GET', `${V}/attachments/${a.id}`, undefined, MV)).body.attachment;
  assert.equal(shown.connection_info.data.export_name, a.connection_info.data.export_name);
  await waitFor('a write after the failover', async () => {
    const r = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 16M 64k', shown.connection_info.data.uri]).catch(() => undefined);
    return r && !/error|failed/i.test(`${r.stdout}${r.stderr}`);
  });
  assert.ok(bytesOf(fileOf(s.stateDir, 'beta', id), 16 * MiB, 64 * 1024).equals(Buffer.alloc(64 * 1024, 0x33)), 'written on beta, the primary now');
  // Alpha, back as the secondary, has it too once its mirror is in step (until then beta serves the failed-over volume alone).
  const r = await waitFor('alpha in step as the secondary', async () => { const x = await replication(s, id); return x.state === 'enabled' && x; });
  assert.ok(bytesOf(fileOf(s.stateDir, 'alpha', id), 16 * MiB, 64 * 1024).equals(Buffer.alloc(64 * 1024, 0x33)));
  assert.deepEqual([r.replication_status, r.secondary.cluster.endsWith('@alpha')], ['failed-over', true]);

  // Failback with the volume attached: its writes are held while it moves back; the host writes on, on alpha, mirrored to beta.
  assert.equal((await put({ host: alpha.host, backend_id: 'default' })).status, 202);
  await waitFor('alpha failed back', async () => (await volumeService(s, 'alpha')).replication_status === 'enabled');
  assert.match((await s.request('GET', `${V}/volumes/${id}`)).body.volume['os-vol-host-attr:host'], /@alpha#/);
  await waitFor('a write after the failback', async () => {
    const r = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x44 20M 64k', shown.connection_info.data.uri]).catch(() => undefined);
    return r && !/error|failed/i.test(`${r.stdout}${r.stderr}`);
  });
  for (const backend of ['alpha', 'beta']) {
    assert.ok(bytesOf(fileOf(s.stateDir, backend, id), 20 * MiB, 64 * 1024).equals(Buffer.alloc(64 * 1024, 0x44)), `on ${backend}`);
    assert.ok(bytesOf(fileOf(s.stateDir, backend, id), 16 * MiB, 64 * 1024).equals(Buffer.alloc(64 * 1024, 0x33)), `on ${backend}`);
  }
  assert.ok(bytesOf(fileOf(s.stateDir, 'beta', id), MiB, MiB).equals(Buffer.alloc(MiB, 0x5a)));
});

test('asynchronous replication: a secondary that cannot be reached degrades the replication status only, and catches up by itself', async (t) => {
  const s = await startTestServer(t, { ini: CONFIG });
  await makeType(s, 'repl', REPLICATED);
  const id = await createVolume(s, 'repl');
  await waitForStatus(s, id, 'available');
  await shippedAfter(s, id, 0);

  // The secondary's export goes away: points fail, the volume says so with a user message, and stays available.
  const x = await s.server.db.kysely.selectFrom('volume_exports').selectAll().where('volume_id', '=', id).where('purpose', '=', 'replication').executeTakeFirstOrThrow();
  await s.server.db.kysely.deleteFrom('volume_exports').where('export_name', '=', x.export_name).execute();
  writePattern(fileOf(s.stateDir, 'alpha', id), [128 * MiB], MiB);
  await waitFor('replication_status error', async () => (await s.request('GET', `${V}/volumes/${id}`)).body.volume.replication_status === 'error');
  const v = (await s.request('GET', `${V}/volumes/${id}`)).body.volume;
  assert.equal(v.status, 'available');
  assert.match((await replication(s, id)).last_error, /export of the secondary copy/);
  const msgs = await s.request('GET', `${V}/messages`, undefined, { 'OpenStack-API-Version': 'volume 3.3' });
  assert.ok((msgs.body.messages as Array<{ resource_uuid: string; user_message: string }>).some((m) => m.resource_uuid === id && /catches up by itself/.test(m.user_message)));
  // …and so does an event, with the same reason; /metrics shows the copy behind, and how long since its last point.
  const degraded = (await streamedEvents(s, PROJECT)).filter((e) => e.data.resource_id === id && e.event === 'volume.replication_degraded');
  assert.equal(degraded.length, 1, 'one event per episode, not one per failed point');
  assert.match(degraded[0]!.data.detail?.reason, /^replicate volume: The secondary copy could not be updated/);
  assert.deepEqual([degraded[0]!.data.detail?.replication_status, degraded[0]!.data.detail?.mode], ['error', 'async']);
  const behind = await scrape(s);
  assert.equal(behind.value('basalt_replication_in_step', { volume: id, mode: 'async' }), 0);
  assert.ok(behind.value('basalt_replication_lag_seconds', { volume: id, mode: 'async' })! > 0);
  assert.equal(behind.value('basalt_replication_rpo_seconds', { volume: id, mode: 'async' }), 1);

  // Back: the next point ships what was missed, and the status is enabled again.
  await s.server.db.kysely.insertInto('volume_exports').values(x).execute();
  await waitFor('replication_status enabled again', async () => (await s.request('GET', `${V}/volumes/${id}`)).body.volume.replication_status === 'enabled');
  assert.ok(bytesOf(fileOf(s.stateDir, 'beta', id), 128 * MiB, MiB).equals(Buffer.alloc(MiB, 128 % 251 + 1)));
  const restored = (await streamedEvents(s, PROJECT)).filter((e) => e.data.resource_id === id && e.event.startsWith('volume.replication_'));
  assert.deepEqual(restored.map((e) => e.event), ['volume.replication_degraded', 'volume.replication_restored']);
  const inStep = await scrape(s);
  assert.equal(inStep.value('basalt_replication_in_step', { volume: id, mode: 'async' }), 1);
  assert.ok(inStep.value('basalt_replication_shipped_bytes', { volume: id, mode: 'async' })! >= MiB);
});

test('asynchronous replication: a copy slower than its RPO, with nothing failing, is reported lagging and clears itself; other volumes ship meanwhile', async (t) => {
  const shipped: Array<{ volume_id: string; time: number }> = [];
  const logLines = { push: (line: string) => { if (line.includes('replication point shipped')) shipped.push(JSON.parse(line)); return 0; } } as unknown as string[];
  const s = await startTestServer(t, { ini: CONFIG, logLines });
  await makeType(s, 'repl', REPLICATED);
  const [slow, slow2, other] = [await createVolume(s, 'repl'), await createVolume(s, 'repl'), await createVolume(s, 'repl')];
  for (const id of [slow!, slow2!, other!]) {
    await waitForStatus(s, id, 'available');
    await shippedAfter(s, id, 0);
  }

  // Two volumes are held by another holder of their locks (as a long operation would hold them): their points
  // cannot begin, and nothing fails — each attempt gives up waiting for the lock and tries again at the next tick.
  const coordinator = openCoordinator(s.server.config.coordination.backend_url);
  t.after(() => coordinator.close());
  const held = [await coordinator.lock(`volume-${slow}`, 30_000), await coordinator.lock(`volume-${slow2}`, 30_000)];
  const heldAt = Date.now();
  await waitFor('replication_status error', async () => (await s.request('GET', `${V}/volumes/${slow}`)).body.volume.replication_status === 'error');
  const v = (await s.request('GET', `${V}/volumes/${slow}`)).body.volume;
  assert.equal(v.status, 'available');
  const lagging = await replication(s, slow!);
  assert.equal(lagging.state, 'lagging', 'lagging, not failed');
  assert.match(lagging.last_error, /s old, more than the RPO of 1 s/);
  const msgs = await s.request('GET', `${V}/messages`, undefined, { 'OpenStack-API-Version': 'volume 3.3' });
  assert.ok((msgs.body.messages as Array<{ resource_uuid: string; user_message: string }>).some((m) => m.resource_uuid === slow && /further behind than the replication RPO/.test(m.user_message)));
  const degraded = (await streamedEvents(s, PROJECT)).filter((e) => e.data.resource_id === slow && e.event === 'volume.replication_degraded');
  assert.equal(degraded.length, 1);
  assert.match(degraded[0]!.data.detail?.reason, /^replicate volume: The secondary copy is further behind than the replication RPO allows/);
  assert.equal(degraded[0]!.data.detail?.message_event_id, 'VOLUME_VOLUME_024_034');
  assert.equal(degraded[0]!.data.detail?.rpo_seconds, 1);
  assert.ok(degraded[0]!.data.detail?.lag_seconds > 1, JSON.stringify(degraded[0]!.data.detail));
  assert.equal((await scrape(s)).value('basalt_replication_in_step', { volume: slow!, mode: 'async' }), 0);

  // Meanwhile the third volume ships on: its points do not queue behind the two that wait (each wait is 2 s;
  // one after another they would allow it at most one point every 5 s).
  await new Promise((r) => setTimeout(r, Math.max(0, heldAt + 12_000 - Date.now())));
  const others = shipped.filter((x) => x.volume_id === other && x.time > heldAt).length;
  assert.ok(others >= 5, `${others} points of the other volume in the 12 s the two waited`);
  for (const h of held) await h.release();

  // The next point ships in time: enabled again, with one restored event.
  await waitFor('replication_status enabled again', async () => (await s.request('GET', `${V}/volumes/${slow}`)).body.volume.replication_status === 'enabled');
  assert.equal((await replication(s, slow!)).state, 'enabled');
  const events = (await streamedEvents(s, PROJECT)).filter((e) => e.data.resource_id === slow && e.event.startsWith('volume.replication_'));
  assert.deepEqual(events.map((e) => e.event), ['volume.replication_degraded', 'volume.replication_restored']);
  assert.equal((await scrape(s)).value('basalt_replication_in_step', { volume: slow!, mode: 'async' }), 1);
});
