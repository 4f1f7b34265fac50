/**
 * Cleanup of a dead cluster member (issue 5): two volume services of one
 * cluster on PostgreSQL, leases far longer than `service_down_time`. Fences
 * reach whichever member serves an export; when a member is SIGKILLed, its
 * jobs are handed over as soon as it counts as down (not when its leases run
 * out) and its exports move: attachments get connection info naming the live
 * member, where the data is. `POST /workers/cleanup` (3.24) reports it.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import pg from 'pg';
import { connectExport } from '../helpers/nbd-raw.ts';
import { startPostgres } from '../helpers/postgres.ts';
import { spawnBasalt } from '../helpers/process.ts';
import { FAST_TIMINGS, PROJECT, request, tempStateDir, waitFor } from '../helpers/server.ts';
import { readReport } from '../../src/services/index.ts';

const run = promisify(execFile);
const V = `/v3/${PROJECT}`;
const CONNECTOR = { connector: { host: 'compute-1', initiator: 'iqn.compute-1' } };
type Info = { driver_volume_type: string; data: { host: string; port: number; export_name: string; uri: string } };

test('a dead member\'s jobs are handed over at once, its exports move, fences reach every member', { timeout: 150_000 }, async (t) => {
  const postgres = await startPostgres();
  const database = await postgres.createDatabase();
  const stateDir = tempStateDir(t);
  const shared = path.join(stateDir, 'shared-storage');
  const env = {
    ...FAST_TIMINGS, BASALT_SERVICE_DOWN_TIME: '3', BASALT_JOB_LEASE_SECONDS: '90',
    BASALT_STATE_DIR: stateDir, BASALT_DATABASE__CONNECTION: database, BASALT_PORT: '0', BASALT_LOG_LEVEL: 'info',
    BASALT_BACKEND_DEFAULTS__CLUSTER: 'c1', BASALT_BACKEND_DEFAULTS__FILE_VOLUME_DIR: shared,
    BASALT_COORDINATION__BACKEND_URL: database, BASALT_QUOTA_VOLUMES: '-1', BASALT_QUOTA_GIGABYTES: '-1',
  };
  const procs: ChildProcess[] = [];
  const client = new pg.Client({ connectionString: database });
  t.after(async () => { await client.end().catch(() => undefined); });
  t.after(() => { for (const p of procs) p.kill('SIGKILL'); });
  t.after(() => postgres.stop());
  const front = await spawnBasalt(env, 'api,scheduler');
  procs.push(front.child);
  const members = new Map<string, ChildProcess>();
  for (const host of ['node-a', 'node-b']) {
    const m = await spawnBasalt({ ...env, BASALT_HOST: host }, 'volume', 'volume service started');
    procs.push(m.child);
    members.set(`${host}@file`, m.child);
  }
  await client.connect();
  const url = front.url!;
  const admin = { 'OpenStack-API-Version': 'volume 3.44' };
  const createVolume = async (body: Record<string, unknown>): Promise<string> => {
    const r = await request(url, 'POST', `${V}/volumes`, { volume: { size: 1, ...body } });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    return r.body.volume.id as string;
  };
  const available = (id: string, ms = 30_000) => waitFor(`${id} available`, async () => (await request(url, 'GET', `${V}/volumes/${id}`)).body.volume.status === 'available', ms);
  const attach = async (volumeId: string): Promise<{ id: string; info: Info }> => {
    const r = await request(url, 'POST', `${V}/attachments`, { attachment: { volume_uuid: volumeId, ...CONNECTOR } }, admin);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return { id: r.body.attachment.id, info: r.body.attachment.connection_info };
  };
  const endpoints = new Map<number, string>(); // NBD port → member host
  for (const row of (await client.query(`select host, capabilities from services where "binary" = 'cinder-volume'`)).rows as Array<{ host: string; capabilities: string }>) {
    endpoints.set(readReport(row)!.nbd_port!, row.host);
  }
  assert.equal(endpoints.size, 2);

  // Fences: whichever member runs the fence job, the member serving the export drops its clients.
  for (let i = 0; i < 4; i++) {
    const id = await createVolume({});
    await available(id);
    const a = await attach(id);
    const sock = await connectExport(a.info.data.host, a.info.data.port, a.info.data.export_name);
    const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
    assert.equal((await request(url, 'DELETE', `${V}/attachments/${a.id}`, undefined, admin)).status, 200);
    await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error(`export of attachment ${i} still open 3 s after its delete`)), 3000))]);
  }

  // A volume in use with data written through its export, and clones in progress.
  const used = await createVolume({});
  await available(used);
  const att = await attach(used);
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 4M 1M', att.info.data.uri]);
  // A snapshot of the attached volume runs on the member serving its export (which quiesces its writes).
  await request(url, 'POST', `${V}/attachments/${att.id}/action`, { 'os-complete': null }, admin);
  const snap = await request(url, 'POST', `${V}/snapshots`, { snapshot: { volume_id: used, force: true } });
  assert.equal(snap.status, 202, JSON.stringify(snap.body));
  const job = await client.query(`select target from jobs where kind = 'snapshot.create' and resource_id = $1`, [snap.body.snapshot.id]);
  assert.equal((job.rows[0] as { target: string }).target, `member:${endpoints.get(att.info.data.port)}`);
  await waitFor('snapshot available', async () => (await request(url, 'GET', `${V}/snapshots/${snap.body.snapshot.id}`)).body.snapshot.status === 'available');
  const src = await createVolume({});
  await available(src);
  execFileSync('dd', ['if=/dev/urandom', `of=${path.join(shared, `volume-${src}`)}`, 'bs=1M', 'count=512', 'conv=notrunc', 'status=none']);
  const clones = [];
  for (let i = 0; i < 4; i++) clones.push(await createVolume({ source_volid: src }));

  // Kill the member that holds a clone job (its lease has 90 s left).
  let victim = '';
  await waitFor('a member holds a clone job', async () => {
    const r = await client.query(`select s.host from jobs j join services s on s.instance_id = j.lease_owner where j.state = 'running' and j.kind = 'volume.create' limit 1`);
    victim = (r.rows[0] as { host?: string } | undefined)?.host ?? '';
    return victim !== '';
  }, 20_000);
  members.get(victim)!.kill('SIGKILL');
  const killedAt = Date.now();
  const survivor = [...members.keys()].find((h) => h !== victim)!;

  for (const id of clones) await available(id, 60_000);
  assert.ok(Date.now() - killedAt < 45_000, 'the jobs were handed over long before their 90 s leases ran out');
  const head = fs.readFileSync(path.join(shared, `volume-${src}`)).subarray(0, 512 * 1024 * 1024);
  for (const id of clones) {
    const copy = fs.readFileSync(path.join(shared, `volume-${id}`));
    assert.equal(copy.length, 1024 ** 3);
    assert.ok(copy.subarray(0, head.length).equals(head), `clone ${id} holds the source's data`);
  }
  const leftover = await client.query(`select count(*)::int as n from jobs j join services s on s.instance_id = j.lease_owner where s.host = $1 and j.state = 'running'`, [victim]);
  assert.equal((leftover.rows[0] as { n: number }).n, 0, 'no job is left leased by the dead member');

  // The export is on the survivor now (it was there already if the hash chose it).
  let moved: Info | undefined;
  await waitFor('connection info names a live member', async () => {
    const r = await request(url, 'GET', `${V}/attachments/${att.id}`, undefined, admin);
    moved = r.body.attachment.connection_info as Info;
    return endpoints.get(moved.data.port) === survivor;
  }, 20_000);
  assert.equal(moved!.data.export_name, att.info.data.export_name, 'same export name (the credential) at the new endpoint');
  const read = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 4M 1M', moved!.data.uri]);
  assert.doesNotMatch(read.stdout, /verification failed/);

  // The admin API: the dead member is reported as being cleaned (it has a live peer) …
  const v324 = { 'OpenStack-API-Version': 'volume 3.24' };
  assert.equal((await request(url, 'POST', `${V}/workers/cleanup`, {}, { 'OpenStack-API-Version': 'volume 3.23' })).status, 404);
  assert.equal((await request(url, 'POST', `${V}/workers/cleanup`, { binary: 'nova-compute' }, v324)).status, 400);
  let r = await request(url, 'POST', `${V}/workers/cleanup`, { cluster_name: 'c1' }, v324);
  assert.equal(r.status, 202, JSON.stringify(r.body));
  assert.deepEqual(r.body.cleaning.map((s: { host: string }) => s.host), [victim]);
  assert.deepEqual(r.body.unavailable, []);
  assert.deepEqual((await request(url, 'POST', `${V}/workers/cleanup`, { is_up: true }, v324)).body, { cleaning: [], unavailable: [] });
  // … and once the whole cluster is dead, nobody can take its work.
  members.get(survivor)!.kill('SIGKILL');
  await waitFor('both members down', async () => {
    r = await request(url, 'POST', `${V}/workers/cleanup`, { cluster_name: 'c1' }, v324);
    return r.body.unavailable.length === 2;
  }, 20_000);
  assert.deepEqual(r.body.cleaning, []);
});
