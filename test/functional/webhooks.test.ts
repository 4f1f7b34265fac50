/**
 * Webhooks (issue 17 part 2): an admin registers a URL, the events it wants
 * and a secret; every matching event is POSTed to a real HTTP receiver that
 * checks the HMAC-SHA256 signature over the timestamp and the body. Delivery
 * is a durable job: a receiver that is down, then up, gets the events once it
 * is up; a slow one is tried again; each attempt is in the delivery history.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { freePort } from '../helpers/net.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';
import { startReceiver, WEBHOOK_SECRET as SECRET } from '../helpers/webhook-receiver.ts';

const V = `/v3/${PROJECT}`;
const EXPERIMENTAL = { 'OpenStack-API-Experimental': 'true' };

async function register(s: TestServer, webhook: Record<string, unknown>): Promise<string> {
  const r = await s.request('POST', `${V}/webhooks`, { webhook }, EXPERIMENTAL);
  assert.equal(r.status, 201, JSON.stringify(r.body));
  assert.equal(r.body.webhook.secret, undefined, 'the secret is never shown again');
  return r.body.webhook.id as string;
}

async function createVolume(s: TestServer): Promise<string> {
  const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } });
  await waitForStatus(s, r.body.volume.id, 'available');
  return r.body.volume.id as string;
}

test('signed deliveries of the events a webhook asks for; admin only, experimental, bad input named', async (t) => {
  const s = await startTestServer(t);
  const receiver = await startReceiver(t);
  const id = await register(s, { url: receiver.url, secret: SECRET, events: ['volume.*'], project_id: PROJECT });
  const vol = await createVolume(s);
  const snap = await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: vol } });
  await waitFor('snapshot', async () => (await s.request('GET', `${V}/snapshots/${snap.body.snapshot.id}`)).body.snapshot.status === 'available');
  await waitFor('create and available delivered', async () => receiver.received.some((r) => r.body.resource_id === vol && r.body.to_status === 'available'));
  assert.deepEqual(receiver.refused, []);
  // Deliveries are jobs that may run side by side: they arrive in any order, each with its place in the stream.
  // Delivery is at least once: a worker whose lease ran out on a loaded machine may send one again, under the same delivery id.
  const mine = [...new Map(receiver.received.filter((r) => r.body.resource_id === vol).map((r) => [r.delivery, r])).values()].sort((a, b) => a.body.id - b.body.id);
  assert.deepEqual(mine.map((r) => [r.event, r.body.to_status]), [['volume.create', 'creating'], ['volume.status', 'available']]);
  assert.ok(receiver.received.every((r) => r.event.startsWith('volume.')), 'snapshot events are filtered out');
  assert.equal(mine[0]!.body.project_id, PROJECT);

  // The history shows each attempt.
  await waitFor('history', async () => (await s.request('GET', `${V}/webhooks/${id}/deliveries`, undefined, EXPERIMENTAL)).body.deliveries.length >= 2);
  const history = (await s.request('GET', `${V}/webhooks/${id}/deliveries`, undefined, EXPERIMENTAL)).body.deliveries;
  assert.ok(history.every((d: { outcome: string; http_status: number }) => d.outcome === 'delivered' && d.http_status === 204), JSON.stringify(history));

  // Admin only; experimental; bad input named; unregistering stops deliveries.
  assert.equal((await s.request('GET', `${V}/webhooks`, undefined, { ...EXPERIMENTAL, 'X-Auth-Token': `alice:${PROJECT}`, 'X-Roles': 'member' })).status, 403);
  assert.equal((await s.request('GET', `${V}/webhooks`)).status, 404);
  const bad = await s.request('POST', `${V}/webhooks`, { webhook: { url: 'ftp://x', secret: SECRET } }, EXPERIMENTAL);
  assert.equal(bad.status, 400);
  assert.match(bad.body.badRequest.message, /url/);
  const weak = await s.request('POST', `${V}/webhooks`, { webhook: { url: receiver.url, secret: 'short' } }, EXPERIMENTAL);
  assert.match(weak.body.badRequest.message, /secret/);
  assert.deepEqual((await s.request('GET', `${V}/webhooks`, undefined, EXPERIMENTAL)).body.webhooks.map((w: { id: string; events: string[] }) => [w.id, w.events]), [[id, ['volume.*']]]);
  assert.equal((await s.request('DELETE', `${V}/webhooks/${id}`, undefined, EXPERIMENTAL)).status, 204);
  const before = receiver.requests;
  await createVolume(s);
  await new Promise((r) => setTimeout(r, 1000)); // five dispatch passes: none may deliver to a removed webhook
  assert.equal(receiver.requests, before);
});

test('a receiver that is down, then up, gets the events once it is up; a slow one is tried again', async (t) => {
  const port = await freePort();
  const s = await startTestServer(t, { env: { BASALT_WEBHOOKS__TIMEOUT: '0.5', BASALT_WEBHOOKS__MAX_ATTEMPTS: '30' } });
  const id = await register(s, { url: `http://127.0.0.1:${port}/hook`, secret: SECRET });
  const vol = await createVolume(s);
  const history = async () => (await s.request('GET', `${V}/webhooks/${id}/deliveries`, undefined, EXPERIMENTAL)).body.deliveries as Array<{ outcome: string; error: string; attempt: number; delivery_id: string }>;
  await waitFor('failed attempts while it is down', async () => (await history()).filter((d) => d.outcome === 'failed').length >= 3);
  assert.match((await history())[0]!.error, /could not be reached/);

  const receiver = await startReceiver(t, { port });
  await waitFor('both events once it is up', async () => receiver.received.filter((r) => r.body.resource_id === vol).length === 2, 60_000);
  assert.deepEqual(receiver.received.filter((r) => r.body.resource_id === vol).map((r) => r.body.to_status).sort(), ['available', 'creating']);
  await waitFor('the history says delivered', async () => (await history()).filter((d) => d.outcome === 'delivered').length === 2);

  // Slow: the first answer comes after the timeout; the delivery is tried again under the same delivery id.
  const slow = await startReceiver(t, { slowFirstMs: 2000 });
  const slowId = await register(s, { url: slow.url, secret: SECRET, events: ['volume.create'] });
  const vol2 = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id as string;
  const slowHistory = async () => (await s.request('GET', `${V}/webhooks/${slowId}/deliveries`, undefined, EXPERIMENTAL)).body.deliveries as Array<{ outcome: string; error: string; attempt: number; delivery_id: string }>;
  await waitFor('delivered after a timeout', async () => (await slowHistory()).some((d) => d.outcome === 'delivered'));
  const h = (await slowHistory()).reverse();
  assert.equal(h[0]!.outcome, 'failed');
  assert.match(h[0]!.error, /no answer within 0\.5 s/);
  assert.equal(h.at(-1)!.delivery_id, h[0]!.delivery_id, 'a retry is the same delivery');
  assert.ok(slow.received.some((r) => r.body.resource_id === vol2));
});
