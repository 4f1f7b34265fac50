/** The volume lifecycle over HTTP against a real server with the file backend. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { PROJECT, startTestServer, waitFor, waitForStatus } from '../helpers/server.ts';

const GiB = 1024 ** 3;
const V = `/v3/${PROJECT}`;

test('create, show, extend, metadata and delete a volume as a sparse file', async (t) => {
  const s = await startTestServer(t);
  const created = await s.request('POST', `${V}/volumes`, { volume: { size: 1, name: 'data', description: 'd', metadata: { tier: 'gold' } } });
  assert.equal(created.status, 202);
  assert.match(created.headers.get('x-openstack-request-id')!, /^req-[0-9a-f-]{36}$/);
  const vol = created.body.volume;
  assert.equal(vol.status, 'creating');
  assert.equal(vol.name, 'data');
  assert.deepEqual(vol.metadata, { tier: 'gold' });

  const available = await waitForStatus(s, vol.id, 'available');
  assert.equal(available.size, 1);
  assert.match(available['os-vol-host-attr:host'], /@file#file$/);
  const file = path.join(s.stateDir, 'volumes', 'file', `volume-${vol.id}`);
  const st = fs.statSync(file);
  assert.equal(st.size, 1 * GiB);
  assert.ok(st.blocks * 512 < 1024 * 1024, 'a new volume is sparse');

  const ext = await s.request('POST', `${V}/volumes/${vol.id}/action`, { 'os-extend': { new_size: 3 } });
  assert.equal(ext.status, 202);
  const extended = await waitForStatus(s, vol.id, 'available');
  assert.equal(extended.size, 3);
  assert.equal(fs.statSync(file).size, 3 * GiB);

  const notLarger = await s.request('POST', `${V}/volumes/${vol.id}/action`, { 'os-extend': { new_size: 2 } });
  assert.equal(notLarger.status, 400);
  assert.match(notLarger.body.badRequest.message, /greater than current size/);

  // Metadata sub-resources.
  assert.deepEqual((await s.request('POST', `${V}/volumes/${vol.id}/metadata`, { metadata: { a: '1' } })).body, { metadata: { a: '1', tier: 'gold' } });
  assert.deepEqual((await s.request('GET', `${V}/volumes/${vol.id}/metadata/a`)).body, { meta: { a: '1' } });
  assert.deepEqual((await s.request('PUT', `${V}/volumes/${vol.id}/metadata/a`, { meta: { a: '2' } })).body, { meta: { a: '2' } });
  assert.equal((await s.request('PUT', `${V}/volumes/${vol.id}/metadata/a`, { meta: { b: '2' } })).status, 400);
  assert.equal((await s.request('DELETE', `${V}/volumes/${vol.id}/metadata/a`)).status, 200);
  assert.equal((await s.request('GET', `${V}/volumes/${vol.id}/metadata/a`)).status, 404);
  assert.deepEqual((await s.request('PUT', `${V}/volumes/${vol.id}/metadata`, { metadata: { only: 'x' } })).body, { metadata: { only: 'x' } });
  assert.deepEqual((await s.request('GET', `${V}/volumes/${vol.id}/metadata`)).body, { metadata: { only: 'x' } });

  const upd = await s.request('PUT', `${V}/volumes/${vol.id}`, { volume: { name: 'renamed', description: null } });
  assert.equal(upd.status, 200);
  assert.equal(upd.body.volume.name, 'renamed');
  assert.equal(upd.body.volume.description, null);

  const del = await s.request('DELETE', `${V}/volumes/${vol.id}`);
  assert.equal(del.status, 202);
  await waitFor('volume row gone', async () => (await s.request('GET', `${V}/volumes/${vol.id}`)).status === 404);
  assert.equal(fs.existsSync(file), false, 'the file is deleted with the volume');
});

test('a deleted volume is gone for good and a second delete is a 404', async (t) => {
  const s = await startTestServer(t);
  const { body } = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } });
  await waitForStatus(s, body.volume.id, 'available');
  assert.equal((await s.request('DELETE', `${V}/volumes/${body.volume.id}`)).status, 202);
  const again = await s.request('DELETE', `${V}/volumes/${body.volume.id}`);
  assert.ok(again.status === 404 || again.status === 400, `second delete: ${again.status}`);
  await waitFor('gone', async () => (await s.request('GET', `${V}/volumes/${body.volume.id}`)).status === 404);
  assert.equal((await s.request('DELETE', `${V}/volumes/${body.volume.id}`)).status, 404);
});

test('extend is refused unless the volume is available', async (t) => {
  const s = await startTestServer(t);
  const { body } = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } });
  const id = body.volume.id;
  await waitForStatus(s, id, 'available');
  assert.equal((await s.request('POST', `${V}/volumes/${id}/action`, { 'os-extend': { new_size: 2 } })).status, 202);
  // Immediately again: either still extending (400) or done; never two extends at once.
  const second = await s.request('POST', `${V}/volumes/${id}/action`, { 'os-extend': { new_size: 5 } });
  if (second.status === 400) assert.match(second.body.badRequest.message, /must be available to extend/);
  else assert.equal(second.status, 202);
  const unknown = await s.request('POST', `${V}/volumes/${id}/action`, { 'os-frobnicate': {} });
  assert.equal(unknown.status, 400);
  assert.match(unknown.body.badRequest.message, /no such action: os-frobnicate/);
});

test('a volume that fits no backend ends in error with a user message', async (t) => {
  const s = await startTestServer(t, { env: { BASALT_BACKEND_DEFAULTS__TOTAL_CAPACITY_GB: '10', BASALT_BACKEND_DEFAULTS__MAX_OVER_SUBSCRIPTION_RATIO: '1' } });
  const created = await s.request('POST', `${V}/volumes`, { volume: { size: 50 } });
  const { body } = created;
  const vol = await waitForStatus(s, body.volume.id, 'error');
  assert.equal(vol['os-vol-host-attr:host'], null);
  const old = await s.request('GET', `${V}/messages`);
  assert.equal(old.status, 404, 'messages exist from 3.3');
  const msgs = await s.request('GET', `${V}/messages?resource_uuid=${body.volume.id}`, undefined, { 'OpenStack-API-Version': 'volume 3.5' });
  assert.equal(msgs.status, 200);
  assert.equal(msgs.body.messages.length, 1);
  const m = msgs.body.messages[0];
  assert.equal(m.event_id, 'VOLUME_VOLUME_001_003');
  assert.ok(m.user_message.startsWith('schedule allocate volume: Could not find any available weighted backend.'));
  assert.match(m.user_message, /Rejected: .*@file#file: CapacityFilter/, 'the message names the filter that rejected each backend');
  assert.equal(m.resource_type, 'VOLUME');
  assert.equal(m.request_id, created.headers.get('x-openstack-request-id'), 'the message names the request that created the volume');
  const one = await s.request('GET', `${V}/messages/${m.id}`, undefined, { 'OpenStack-API-Version': 'volume 3.3' });
  assert.equal(one.body.message.id, m.id);
  // An error volume that never reached a backend can be deleted at once.
  assert.equal((await s.request('DELETE', `${V}/volumes/${body.volume.id}`)).status, 202);
  assert.equal((await s.request('GET', `${V}/volumes/${body.volume.id}`)).status, 404);
  assert.equal((await s.request('DELETE', `${V}/messages/${m.id}`, undefined, { 'OpenStack-API-Version': 'volume 3.3' })).status, 204);
  assert.equal((await s.request('GET', `${V}/messages/${m.id}`, undefined, { 'OpenStack-API-Version': 'volume 3.3' })).status, 404);
});

test('messages page by keyset like volumes (3.5), and are private to their project', async (t) => {
  const s = await startTestServer(t, { env: { BASALT_BACKEND_DEFAULTS__TOTAL_CAPACITY_GB: '10', BASALT_BACKEND_DEFAULTS__MAX_OVER_SUBSCRIPTION_RATIO: '1' } });
  const mv = { 'OpenStack-API-Version': 'volume 3.5' };
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push((await s.request('POST', `${V}/volumes`, { volume: { size: 100 } })).body.volume.id);
  for (const id of ids) await waitForStatus(s, id, 'error');
  const seen: string[] = [];
  let next: string | undefined = `${V}/messages?limit=1&sort=created_at:asc`;
  while (next) {
    const page = await s.request('GET', next, undefined, mv);
    assert.equal(page.status, 200);
    seen.push(...page.body.messages.map((m: { resource_uuid: string }) => m.resource_uuid));
    const href = page.body.messages_links?.[0]?.href as string | undefined;
    next = href ? new URL(href).pathname + new URL(href).search : undefined;
  }
  assert.deepEqual([...seen].sort(), [...ids].sort(), 'every message once');
  const other = await s.request('GET', '/v3/elsewhere/messages', undefined, { ...mv, 'X-Auth-Token': 'eve:elsewhere' });
  assert.deepEqual(other.body.messages, []);
  // Below 3.5 (Cinder's MESSAGES_PAGINATION) the list is whole: no paging, no links.
  const whole = await s.request('GET', `${V}/messages?limit=1`, undefined, { 'OpenStack-API-Version': 'volume 3.4' });
  assert.equal(whole.body.messages.length, 3);
  assert.equal(whole.body.messages_links, undefined);
});

test('a burst of creates cannot overcommit a pool: capacity counts volumes placed since the last heartbeat', async (t) => {
  const s = await startTestServer(t, { env: {
    BASALT_BACKEND_DEFAULTS__TOTAL_CAPACITY_GB: '10', BASALT_BACKEND_DEFAULTS__MAX_OVER_SUBSCRIPTION_RATIO: '1',
    BASALT_REPORT_INTERVAL: '60', // stats stay stale for the whole burst
    BASALT_QUOTA_VOLUMES: '-1',
  } });
  const created = await Promise.all(Array.from({ length: 14 }, () => s.request('POST', `${V}/volumes`, { volume: { size: 1 } })));
  const ids = created.map((r) => r.body.volume.id as string);
  const final = await Promise.all(ids.map((id) => waitFor(`volume ${id} settled`, async () => {
    const v = (await s.request('GET', `${V}/volumes/${id}`)).body.volume;
    return v.status === 'available' || v.status === 'error' ? v.status as string : undefined;
  })));
  assert.equal(final.filter((x) => x === 'available').length, 10);
  assert.equal(final.filter((x) => x === 'error').length, 4);
});

test('an extend that the pool cannot hold is refused, naming the pool; one that fits goes ahead', async (t) => {
  const s = await startTestServer(t, { env: { BASALT_BACKEND_DEFAULTS__TOTAL_CAPACITY_GB: '10', BASALT_BACKEND_DEFAULTS__MAX_OVER_SUBSCRIPTION_RATIO: '1' } });
  const id = (await s.request('POST', `${V}/volumes`, { volume: { size: 4 } })).body.volume.id as string;
  await waitForStatus(s, id, 'available');
  const refused = await s.request('POST', `${V}/volumes/${id}/action`, { 'os-extend': { new_size: 11 } });
  assert.equal(refused.status, 400);
  assert.match(refused.body.badRequest.message, /Insufficient free space for volume extension: pool .*#.* cannot hold 7 GiB more/);
  assert.equal((await s.request('GET', `${V}/volumes/${id}`)).body.volume.status, 'available', 'nothing changed');
  assert.equal((await s.request('POST', `${V}/volumes/${id}/action`, { 'os-extend': { new_size: 10 } })).status, 202);
  await waitForStatus(s, id, 'available');
  assert.equal((await s.request('GET', `${V}/volumes/${id}`)).body.volume.size, 10);
});
