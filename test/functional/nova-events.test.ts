/**
 * Nova external events (issue 17 part 1): after an in-use extend, every
 * instance the volume is attached to gets `volume-extended` (tag: the volume
 * id) through `POST /os-server-external-events` as Cinder sends it, checked by
 * a real HTTP stand-in for Nova against Nova's schema. Delivery is a durable
 * job of its own: a Nova that is down, slow or refusing never holds or fails
 * the extend; failures are retried with back-off and show in the log, the
 * delivery history (`/metrics`) and, once given up, the volume's user messages.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { freePort } from '../helpers/net.ts';
import { startNovaReceiver, type NovaReceiver } from '../helpers/nova-receiver.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const MV = { 'OpenStack-API-Version': 'volume 3.54' };
const SERVER_A = '11111111-2222-3333-4444-555555555555';
const SERVER_B = '11111111-2222-3333-4444-666666666666';
const CONNECTOR = { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.test', mode: 'rw' };

/** A volume attached (connected and completed) to each of `servers`; multiattach when more than one. */
async function attachedVolume(s: TestServer, servers: readonly string[]): Promise<string> {
  let volumeType: string | undefined;
  if (servers.length > 1) {
    const type = await s.request('POST', `${V}/types`, { volume_type: { name: 'shared', extra_specs: { multiattach: '<is> True' } } });
    assert.equal(type.status, 200, JSON.stringify(type.body));
    volumeType = 'shared';
  }
  const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1, ...(volumeType ? { volume_type: volumeType } : {}) } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const vol = r.body.volume.id as string;
  await waitForStatus(s, vol, 'available');
  for (const server of servers) {
    const a = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, instance_uuid: server, connector: CONNECTOR } }, MV);
    assert.equal(a.status, 200, JSON.stringify(a.body));
    assert.equal((await s.request('POST', `${V}/attachments/${a.body.attachment.id}/action`, { 'os-complete': null }, MV)).status, 204);
  }
  await waitForStatus(s, vol, 'in-use');
  return vol;
}

/** Extends `vol` to `size` GiB in use (3.42) and waits until it is in-use at that size; returns the request id. */
async function extendInUse(s: TestServer, vol: string, size: number): Promise<string> {
  const r = await s.request('POST', `${V}/volumes/${vol}/action`, { 'os-extend': { new_size: size } }, { 'OpenStack-API-Version': 'volume 3.42' });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await waitFor(`volume ${vol} in-use at ${size} GiB`, async () => {
    const v = (await s.request('GET', `${V}/volumes/${vol}`)).body.volume;
    return v.status === 'in-use' && v.size === size;
  });
  return r.headers.get('x-openstack-request-id')!;
}

/** The delivery history of `vol`, oldest first. */
async function deliveries(s: TestServer, vol: string) {
  return s.server.db.kysely.selectFrom('event_deliveries').selectAll().where('resource_id', '=', vol).orderBy('created_at').orderBy('attempt').execute();
}

/** The value of `basalt_event_deliveries{sink="nova",outcome}` in /metrics (0 when absent). */
async function metric(s: TestServer, outcome: string): Promise<number> {
  const text = (await s.request('GET', '/metrics')).body as string;
  const m = new RegExp(`^basalt_event_deliveries\\{sink="nova",outcome="${outcome}"\\} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** The user messages about `vol`. */
async function messagesOf(s: TestServer, vol: string): Promise<Array<{ event_id: string; user_message: string; request_id: string }>> {
  const r = await s.request('GET', `${V}/messages`, undefined, { 'OpenStack-API-Version': 'volume 3.3' });
  return r.body.messages.filter((m: { resource_uuid: string }) => m.resource_uuid === vol);
}

function closeAfter(t: { after(fn: () => Promise<void>): void }, n: NovaReceiver): NovaReceiver {
  t.after(() => n.close());
  return n;
}

test('an in-use extend tells every attached instance through Keystone\'s catalog; an available one tells no one', async (t) => {
  const nova = closeAfter(t, await startNovaReceiver({ keystone: { username: 'cinder-nova', password: 's3cret', region: 'RegionTwo' } }));
  const s = await startTestServer(t, {
    env: {
      BASALT_NOVA__AUTH_URL: nova.keystoneUrl, BASALT_NOVA__USERNAME: 'cinder-nova', BASALT_NOVA__PASSWORD: 's3cret',
      BASALT_NOVA__REGION_NAME: 'RegionTwo', BASALT_NOVA__INTERFACE: 'public',
    },
  });
  const vol = await attachedVolume(s, [SERVER_A, SERVER_B]);
  const requestId = await extendInUse(s, vol, 2);
  await waitFor('the events at Nova', async () => nova.received.length === 1);
  assert.deepEqual(nova.invalid, []);
  assert.deepEqual(nova.received[0]!.events, [
    { server_uuid: SERVER_A, name: 'volume-extended', tag: vol },
    { server_uuid: SERVER_B, name: 'volume-extended', tag: vol },
  ]);
  assert.equal(nova.received[0]!.requestId, requestId, 'the extend\'s request id travels with the events');
  await waitFor('the delivery recorded', async () => (await deliveries(s, vol)).length === 1);
  const [d] = await deliveries(s, vol);
  assert.equal(d!.outcome, 'delivered');
  assert.equal(d!.http_status, 200);
  assert.equal(await metric(s, 'delivered'), 1);

  // An available volume has no instance to tell.
  const plain = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } });
  await waitForStatus(s, plain.body.volume.id, 'available');
  assert.equal((await s.request('POST', `${V}/volumes/${plain.body.volume.id}/action`, { 'os-extend': { new_size: 2 } })).status, 202);
  await waitFor('extended', async () => (await s.request('GET', `${V}/volumes/${plain.body.volume.id}`)).body.volume.size === 2);
  const jobs = await s.server.db.kysely.selectFrom('jobs').select('id').where('kind', '=', 'compute.external_events').execute();
  assert.equal(jobs.length, 1, 'only the in-use extend queued a delivery');
});

test('a Nova that is down, then up: the extend finishes at once, the events arrive once it is up', async (t) => {
  const port = await freePort();
  const logLines: string[] = [];
  const s = await startTestServer(t, {
    logLines,
    env: { BASALT_NOVA__AUTH_TYPE: 'none', BASALT_NOVA__ENDPOINT_OVERRIDE: `http://127.0.0.1:${port}/v2.1`, BASALT_NOVA__EVENT_MAX_ATTEMPTS: '30' },
  });
  const vol = await attachedVolume(s, [SERVER_A]);
  await extendInUse(s, vol, 2);
  await waitFor('two failed attempts', async () => (await deliveries(s, vol)).filter((d) => d.outcome === 'failed').length >= 2);
  assert.ok(logLines.some((l) => /compute side could not be told of the event; trying again later/.test(l) && l.includes(vol)), 'each failure is logged with the volume');
  assert.ok(await metric(s, 'failed') >= 2);
  const failed = (await deliveries(s, vol))[0]!;
  assert.equal(failed.http_status, null);
  assert.match(failed.error!, /Nova could not be reached/);

  const nova = closeAfter(t, await startNovaReceiver({ port }));
  await waitFor('the events at Nova once it is up', async () => nova.received.length === 1, 30_000);
  assert.deepEqual(nova.received[0]!.events, [{ server_uuid: SERVER_A, name: 'volume-extended', tag: vol }]);
  await waitFor('delivered', async () => (await deliveries(s, vol)).some((d) => d.outcome === 'delivered'));
  const history = await deliveries(s, vol);
  assert.deepEqual(history.map((d) => d.attempt), history.map((_, i) => i + 1), 'one row per attempt, in order');
  assert.equal(history.at(-1)!.outcome, 'delivered');
  assert.deepEqual(await messagesOf(s, vol), [], 'delivered in the end: no user message');
  assert.equal((await s.request('GET', `${V}/volumes/${vol}`)).body.volume.status, 'in-use');
});

test('a slow Nova: an attempt that outlasts [nova] timeout is tried again; the extend never waits for it', async (t) => {
  const nova = closeAfter(t, await startNovaReceiver({ behave: (n) => (n === 1 ? { kind: 'slow', ms: 4000 } : { kind: 'answer' }) }));
  const s = await startTestServer(t, { env: { BASALT_NOVA__AUTH_TYPE: 'none', BASALT_NOVA__ENDPOINT_OVERRIDE: nova.url, BASALT_NOVA__TIMEOUT: '0.5' } });
  const vol = await attachedVolume(s, [SERVER_A]);
  await extendInUse(s, vol, 2);
  await waitFor('delivered on a later attempt', async () => (await deliveries(s, vol)).some((d) => d.outcome === 'delivered'));
  const history = await deliveries(s, vol);
  assert.equal(history[0]!.outcome, 'failed');
  assert.match(history[0]!.error!, /no answer within 0\.5 s/);
  assert.equal(history.at(-1)!.outcome, 'delivered');
  assert.ok(history.at(-1)!.attempt >= 2);
  assert.ok(nova.received.length >= 1);
  assert.deepEqual(nova.invalid, []);
});

test('a Nova that refuses (no such server) or stays down: the delivery fails for good with a user message; the volume is untouched', async (t) => {
  const refusing = closeAfter(t, await startNovaReceiver({ knownServers: [] }));
  const s = await startTestServer(t, { env: { BASALT_NOVA__AUTH_TYPE: 'none', BASALT_NOVA__ENDPOINT_OVERRIDE: refusing.url, BASALT_NOVA__EVENT_MAX_ATTEMPTS: '3' } });
  const vol = await attachedVolume(s, [SERVER_A]);
  const requestId = await extendInUse(s, vol, 2);
  await waitFor('the user message', async () => (await messagesOf(s, vol)).length === 1);
  const [m] = await messagesOf(s, vol);
  assert.equal(m!.event_id, 'VOLUME_VOLUME_007_009');
  assert.equal(m!.user_message, 'extend volume: Compute service failed to extend volume.');
  assert.equal(m!.request_id, requestId);
  const history = await deliveries(s, vol);
  assert.deepEqual(history.map((d) => [d.outcome, d.http_status]), [['refused', 404]], 'a refusal is not tried again');
  assert.equal(await metric(s, 'refused'), 1);

  // Down for good: three attempts, then the same message.
  const down = closeAfter(t, await startNovaReceiver({ behave: () => ({ kind: 'status', status: 503 }) }));
  const s2 = await startTestServer(t, { env: { BASALT_NOVA__AUTH_TYPE: 'none', BASALT_NOVA__ENDPOINT_OVERRIDE: down.url, BASALT_NOVA__EVENT_MAX_ATTEMPTS: '3' } });
  const vol2 = await attachedVolume(s2, [SERVER_A]);
  await extendInUse(s2, vol2, 3);
  await waitFor('the user message after the last attempt', async () => (await messagesOf(s2, vol2)).length === 1);
  assert.deepEqual((await deliveries(s2, vol2)).map((d) => [d.attempt, d.outcome, d.http_status]), [[1, 'failed', 503], [2, 'failed', 503], [3, 'failed', 503]]);
  const v = (await s2.request('GET', `${V}/volumes/${vol2}`)).body.volume;
  assert.deepEqual([v.status, v.size], ['in-use', 3]);
});
