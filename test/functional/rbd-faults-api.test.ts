/**
 * Issue 14's faults of an RBD backend, end to end through the API (the
 * driver's own answers are in test/conformance/rbd-driver-faults.test.ts):
 * a Ceph cluster that cannot be reached when Basalt starts, or that refuses
 * its credentials, leaves the backend down (the process serves on, the log
 * names the monitors and the error, os-services says `backend_state: down`,
 * no pool is offered, a create fails with a user message) until the cluster
 * can be reached, when the backend comes up by itself; a create that the
 * scheduler placed on a pool at its quota fails with a user message saying
 * the backend has no room (not the generic driver failure).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { startCeph } from '../helpers/ceph.ts';
import { freePort } from '../helpers/net.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const ceph = await startCeph();
after(() => ceph.stop());

/** A Basalt whose one backend `ceph` is rbd on `pool` with `conf` and `keyring`; its log lines in `lines`. */
async function rbdServer(t: Parameters<typeof startTestServer>[0], conf = ceph.confPath, keyring = ceph.keyringPath, lines: string[] = []): Promise<{ s: TestServer; pool: string }> {
  const pool = await ceph.newPool();
  const s = await startTestServer(t, {
    logLines: lines,
    ini: [
      '[DEFAULT]', 'enabled_backends = ceph',
      '[ceph]', 'volume_driver = rbd', `rbd_pool = ${pool}`, `rbd_user = ${ceph.user}`, `rbd_ceph_conf = ${conf}`, `rbd_keyring_conf = ${keyring}`,
      'rados_connect_timeout = 2',
    ].join('\n'),
  });
  return { s, pool };
}

/** What os-services (3.49) says of the backend's volume service. */
async function volumeService(s: TestServer): Promise<{ state: string; backend_state: string }> {
  const r = await s.request('GET', `${V}/os-services?binary=cinder-volume`, undefined, { 'OpenStack-API-Version': 'volume 3.49' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.services[0];
}

/** The backend's pools as the scheduler offers them. */
async function pools(s: TestServer): Promise<unknown[]> {
  return (await s.request('GET', `${V}/scheduler-stats/get_pools?detail=true`)).body.pools as unknown[];
}

/** The log lines saying the backend is down. */
function downLines(lines: readonly string[]): string[] {
  return lines.map((l) => JSON.parse(l) as { msg?: string }).map((e) => e.msg ?? '').filter((m) => m.startsWith('backend ceph is down: '));
}

/** A create fails with a user message (no pool is offered) and nothing answers 5xx. */
async function createFails(s: TestServer): Promise<void> {
  const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await waitForStatus(s, r.body.volume.id, 'error');
  const msgs = await s.request('GET', `${V}/messages?resource_uuid=${r.body.volume.id}`, undefined, { 'OpenStack-API-Version': 'volume 3.5' });
  assert.match(msgs.body.messages[0].user_message, /^schedule allocate volume: Could not find any available weighted backend/);
  for (const p of [`${V}/volumes/detail`, `${V}/os-services`, `${V}/scheduler-stats/get_pools`]) assert.ok((await s.request('GET', p)).status < 500, p);
}

test('a cluster that cannot be reached at start-up leaves the backend down, naming the monitors and the error, until it can be reached', { timeout: 240_000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-rbd-down-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const port = await freePort();
  const conf = path.join(dir, 'ceph.conf');
  fs.writeFileSync(conf, `[global]\nmon_host = 127.0.0.1:${port}\n`);
  const lines: string[] = [];
  const { s } = await rbdServer(t, conf, ceph.keyringPath, lines);

  // The process serves: the API answers, the service heartbeats, its backend is down.
  assert.deepEqual(downLines(lines), [`backend ceph is down: The Ceph cluster at monitors 127.0.0.1:${port} (${conf}) could not be reached as client.admin: ETIMEDOUT`]);
  assert.deepEqual(await volumeService(s).then((x) => [x.state, x.backend_state]), ['up', 'down']);
  assert.deepEqual(await pools(s), []);
  await createFails(s);
  assert.equal(downLines(lines).length, 1, 'said once, not at every try');

  // The cluster can be reached (the configuration now names its monitor): the backend comes up by itself.
  fs.copyFileSync(ceph.confPath, conf);
  await waitFor('the backend to come up', async () => ((await volumeService(s)).backend_state === 'up' ? true : undefined), 60_000);
  assert.ok(lines.some((l) => (JSON.parse(l) as { msg?: string }).msg === 'backend ceph is up again'));
  assert.equal((await pools(s)).length, 1);
  const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } });
  assert.equal(r.status, 202);
  await waitForStatus(s, r.body.volume.id, 'available');
});

test('a cluster that refuses the credentials leaves the backend down, naming them as refused', { timeout: 240_000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-rbd-creds-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const keyring = path.join(dir, 'wrong.keyring');
  // A well-formed key the cluster never issued.
  fs.writeFileSync(keyring, '[client.admin]\n\tkey = AQBNhGxlAAAAABAAtjFhMLuJ0Wqk0uCgUpL0rg==\n');
  const lines: string[] = [];
  const { s } = await rbdServer(t, ceph.confPath, keyring, lines);
  const [said] = downLines(lines);
  assert.ok(said?.includes(`refused the credentials of client.admin (keyring ${keyring}): EACCES`) && said.includes(ceph.monitor), said);
  assert.deepEqual(await volumeService(s).then((x) => [x.state, x.backend_state]), ['up', 'down']);
  assert.deepEqual(await pools(s), []);
  await createFails(s);
});

test('a create placed on a pool at its quota fails with a user message saying the backend has no room, and works once the quota is lifted', { timeout: 240_000 }, async (t) => {
  const { s, pool } = await rbdServer(t);
  const first = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } });
  await waitForStatus(s, first.body.volume.id, 'available');
  // An object quota the pool is already past: the pool reports free bytes (its byte quota is
  // unset), so the scheduler places the create, and the cluster refuses the image's objects.
  const full = async (): Promise<boolean> => (JSON.parse(await ceph.ceph('osd', 'pool', 'ls', 'detail', '-f', 'json')) as Array<{ pool_name: string; flags_names: string }>)
    .find((p) => p.pool_name === pool)!.flags_names.includes('full');
  await ceph.ceph('osd', 'pool', 'set-quota', pool, 'max_objects', '1');
  await waitFor('the pool flagged full', async () => ((await full()) ? true : undefined));
  const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await waitForStatus(s, r.body.volume.id, 'error', 120_000);
  const msgs = await s.request('GET', `${V}/messages?resource_uuid=${r.body.volume.id}`, undefined, { 'OpenStack-API-Version': 'volume 3.5' });
  assert.deepEqual(msgs.body.messages.map((m: { user_message: string }) => m.user_message),
    ['create volume: The storage backend has no room for it (its pool is full or at its quota); retries were exhausted.']);
  assert.equal(msgs.body.messages[0].event_id, 'VOLUME_VOLUME_013_035');
  for (const p of [`${V}/volumes/detail`, `${V}/volumes/${r.body.volume.id}`]) assert.ok((await s.request('GET', p)).status < 500, p);

  await ceph.ceph('osd', 'pool', 'set-quota', pool, 'max_objects', '0');
  await waitFor('the full flag gone', async () => (!(await full()) ? true : undefined));
  const again = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } });
  await waitForStatus(s, again.body.volume.id, 'available');
});
