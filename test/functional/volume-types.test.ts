/** Volume types, extra specs, access, default types, and how types and zones steer placement. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PROJECT, startTestServer, waitForStatus, type TestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const MEMBER = { 'X-Auth-Token': 'alice:proj-a', 'X-Project-Id': 'proj-a' };
const TWO_BACKENDS = [
  '[DEFAULT]',
  'enabled_backends = fast, slow',
  '[backend_defaults]',
  'volume_driver = memory',
  '[fast]',
  'volume_backend_name = fast-tier',
  '[slow]',
  'volume_backend_name = slow-tier',
  'backend_availability_zone = zone-b',
].join('\n');

async function createType(s: TestServer, name: string, extraSpecs: Record<string, string> = {}, extra: Record<string, unknown> = {}): Promise<string> {
  const r = await s.request('POST', `${V}/types`, { volume_type: { name, extra_specs: extraSpecs, ...extra } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.volume_type.id;
}

async function createVolume(s: TestServer, volume: Record<string, unknown>): Promise<{ id: string; status: number; body: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1, ...volume } });
  return { id: r.body?.volume?.id, status: r.status, body: r.body };
}

test('types: CRUD, extra specs, access, policy and the default type', async (t) => {
  const s = await startTestServer(t);
  const list = await s.request('GET', `${V}/types`);
  assert.deepEqual(list.body.volume_types.map((x: { name: string }) => x.name), ['__DEFAULT__']);
  const dflt = await s.request('GET', `${V}/types/default`);
  assert.equal(dflt.body.volume_type.name, '__DEFAULT__');

  const gold = await createType(s, 'gold', { volume_backend_name: 'file', 'capabilities:thin_provisioning_support': '<is> True' }, { description: 'fast' });
  const dup = await s.request('POST', `${V}/types`, { volume_type: { name: 'gold' } });
  assert.equal(dup.status, 409);
  assert.ok(dup.body.conflictingRequest);
  assert.equal((await s.request('POST', `${V}/types`, { volume_type: { name: ' ' } })).status, 400);
  assert.equal((await s.request('POST', `${V}/types`, { volume_type: { name: 'x', extra_specs: { k: 1 } } })).status, 400);
  assert.equal((await s.request('POST', '/v3/proj-a/types', { volume_type: { name: 'mine' } }, MEMBER)).status, 403);

  const shown = (await s.request('GET', `${V}/types/${gold}`)).body.volume_type;
  assert.deepEqual(shown.extra_specs, { volume_backend_name: 'file', 'capabilities:thin_provisioning_support': '<is> True' });
  assert.equal(shown.is_public, true);
  assert.deepEqual((await s.request('GET', `/v3/proj-a/types/${gold}`, undefined, MEMBER)).body.volume_type.extra_specs, {}, 'extra specs are admin-only');

  assert.deepEqual((await s.request('POST', `${V}/types/${gold}/extra_specs`, { extra_specs: { tier: '1' } })).body, { extra_specs: { tier: '1' } });
  assert.deepEqual((await s.request('GET', `${V}/types/${gold}/extra_specs/tier`)).body, { tier: '1' });
  assert.deepEqual((await s.request('PUT', `${V}/types/${gold}/extra_specs/tier`, { tier: '2' })).body, { tier: '2' });
  assert.equal((await s.request('PUT', `${V}/types/${gold}/extra_specs/tier`, { other: '2' })).status, 400);
  assert.equal((await s.request('DELETE', `${V}/types/${gold}/extra_specs/tier`)).status, 202);
  assert.equal((await s.request('GET', `${V}/types/${gold}/extra_specs/tier`)).status, 404);

  const renamed = await s.request('PUT', `${V}/types/${gold}`, { volume_type: { name: 'platinum', description: null } });
  assert.equal(renamed.body.volume_type.name, 'platinum');
  assert.equal(renamed.body.volume_type.description, null);

  // A private type: only projects with access see and use it.
  const secret = await createType(s, 'secret', {}, { 'os-volume-type-access:is_public': false });
  assert.equal((await s.request('GET', `/v3/proj-a/types/${secret}`, undefined, MEMBER)).status, 404);
  assert.equal((await s.request('POST', '/v3/proj-a/volumes', { volume: { size: 1, volume_type: 'secret' } }, MEMBER)).status, 404);
  assert.equal((await s.request('POST', `${V}/types/${secret}/action`, { addProjectAccess: { project: 'proj-a' } })).status, 202);
  assert.equal((await s.request('POST', `${V}/types/${secret}/action`, { addProjectAccess: { project: 'proj-a' } })).status, 409);
  assert.deepEqual((await s.request('GET', `${V}/types/${secret}/os-volume-type-access`)).body.volume_type_access, [{ volume_type_id: secret, project_id: 'proj-a' }]);
  assert.ok((await s.request('GET', '/v3/proj-a/types', undefined, MEMBER)).body.volume_types.some((x: { id: string }) => x.id === secret));
  const privateVol = await s.request('POST', '/v3/proj-a/volumes', { volume: { size: 1, volume_type: 'secret' } }, MEMBER);
  assert.equal(privateVol.status, 202);
  assert.equal(privateVol.body.volume.volume_type, 'secret');
  assert.equal((await s.request('GET', `${V}/types?is_public=false`)).body.volume_types.length, 1);
  assert.equal((await s.request('GET', `${V}/types`)).body.volume_types.length, 2, 'admins list public types by default');
  assert.equal((await s.request('GET', `${V}/types?is_public=None`)).body.volume_types.length, 3);

  // Types in use, and the default type, cannot be deleted.
  assert.equal((await s.request('DELETE', `${V}/types/${secret}`)).status, 400);
  assert.equal((await s.request('DELETE', `${V}/types/__DEFAULT__`)).status, 400);
  assert.equal((await s.request('DELETE', `${V}/types/${gold}`)).status, 202);
  assert.equal((await s.request('GET', `${V}/types/${gold}`)).status, 404);

  // A volume without a type gets the default type.
  const plain = await createVolume(s, {});
  assert.equal(plain.body.volume.volume_type, '__DEFAULT__');
  assert.equal((await createVolume(s, { volume_type: 'nonesuch' })).status, 404);
});

test('per-project default types (3.62)', async (t) => {
  const s = await startTestServer(t);
  const mv = { 'OpenStack-API-Version': 'volume 3.62' };
  await createType(s, 'silver');
  assert.equal((await s.request('PUT', `${V}/default-types/proj-a`, { default_type: { volume_type: 'silver' } })).status, 404, 'not before 3.62');
  const set = await s.request('PUT', `${V}/default-types/proj-a`, { default_type: { volume_type: 'silver' } }, mv);
  assert.equal(set.status, 200);
  assert.equal(set.body.default_type.project_id, 'proj-a');
  assert.equal((await s.request('GET', '/v3/proj-a/default-types/proj-a', undefined, { ...MEMBER, ...mv })).body.default_type.volume_type_id, set.body.default_type.volume_type_id);
  assert.equal((await s.request('PUT', '/v3/proj-a/default-types/proj-a', { default_type: { volume_type: 'silver' } }, { ...MEMBER, ...mv })).status, 403);
  assert.equal((await s.request('GET', `${V}/default-types`, undefined, mv)).body.default_types.length, 1);
  const v = await s.request('POST', '/v3/proj-a/volumes', { volume: { size: 1 } }, MEMBER);
  assert.equal(v.body.volume.volume_type, 'silver', 'the project default applies');
  assert.equal((await s.request('GET', `/v3/proj-a/types/default`, undefined, MEMBER)).body.volume_type.name, 'silver');
  assert.equal((await s.request('PUT', `${V}/default-types/proj-a`, { default_type: { volume_type: 'nope' } }, mv)).status, 404);
  assert.equal((await s.request('DELETE', `${V}/default-types/proj-a`, undefined, mv)).status, 204);
  assert.equal((await s.request('GET', `${V}/default-types/proj-a`, undefined, mv)).status, 404);
});

test('two backends: types and zones steer placement; a rejection names each backend\'s filter', async (t) => {
  const s = await startTestServer(t, { ini: TWO_BACKENDS });
  await createType(s, 'fast', { volume_backend_name: 'fast-tier' });
  await createType(s, 'slow', { volume_backend_name: 'slow-tier' });
  await createType(s, 'iscsi-only', { 'capabilities:storage_protocol': '<in> iSCSI' });

  const onFast = await createVolume(s, { volume_type: 'fast' });
  assert.match((await waitForStatus(s, onFast.id, 'available'))['os-vol-host-attr:host'], /@fast#fast$/);
  const onSlow = await createVolume(s, { volume_type: 'slow', availability_zone: 'zone-b' });
  const slow = await waitForStatus(s, onSlow.id, 'available');
  assert.match(slow['os-vol-host-attr:host'], /@slow#slow$/);
  assert.equal(slow.availability_zone, 'zone-b');
  const zoneOnly = await createVolume(s, { availability_zone: 'zone-b' });
  assert.match((await waitForStatus(s, zoneOnly.id, 'available'))['os-vol-host-attr:host'], /@slow#slow$/);

  // slow-tier lives in zone-b: asking for it in nova fits nothing.
  const misfit = await createVolume(s, { volume_type: 'slow' });
  await waitForStatus(s, misfit.id, 'error');
  const msg = (await s.request('GET', `${V}/messages?resource_uuid=${misfit.id}`, undefined, { 'OpenStack-API-Version': 'volume 3.3' })).body.messages[0];
  assert.match(msg.user_message, /@fast#fast: CapabilitiesFilter \(volume_backend_name\)/);
  assert.match(msg.user_message, /@slow: AvailabilityZoneFilter/);
  const noProtocol = await createVolume(s, { volume_type: 'iscsi-only' });
  await waitForStatus(s, noProtocol.id, 'error');

  const unknownZone = await createVolume(s, { availability_zone: 'atlantis' });
  assert.equal(unknownZone.status, 400);
  assert.match(unknownZone.body.badRequest.message, /Availability zone 'atlantis' is invalid/);
  const zones = (await s.request('GET', `${V}/os-availability-zone`)).body.availabilityZoneInfo.map((z: { zoneName: string }) => z.zoneName).sort();
  assert.deepEqual(zones, ['nova', 'zone-b']);
});

test('availability zone fallback places an unknown zone in the default zone', async (t) => {
  const s = await startTestServer(t, { env: { BASALT_ALLOW_AVAILABILITY_ZONE_FALLBACK: 'true' } });
  const v = await createVolume(s, { availability_zone: 'atlantis' });
  assert.equal(v.status, 202);
  assert.equal(v.body.volume.availability_zone, 'nova', 'the volume says which zone it got');
  await waitForStatus(s, v.id, 'available');
});

test('per-type quotas', async (t) => {
  const s = await startTestServer(t);
  await createType(s, 'gold');
  assert.equal((await s.request('PUT', `${V}/os-quota-sets/${PROJECT}`, { quota_set: { volumes_gold: 1 } })).status, 200);
  assert.equal((await createVolume(s, { volume_type: 'gold' })).status, 202);
  const second = await createVolume(s, { volume_type: 'gold' });
  assert.equal(second.status, 413);
  assert.match(second.body.overLimit.message, /quota 'volumes_gold'/);
  assert.equal((await createVolume(s, {})).status, 202, 'other types are not limited by it');
  const u = (await s.request('GET', `${V}/os-quota-sets/${PROJECT}?usage=true`)).body.quota_set;
  assert.equal(u.volumes_gold.in_use, 1);
  assert.equal(u.volumes.in_use, 2);
});

test('QoS specs: CRUD, keys, association with types, admin only', async (t) => {
  const s = await startTestServer(t);
  const typeId = await createType(s, 'limited');
  const created = await s.request('POST', `${V}/qos-specs`, { qos_specs: { name: 'slow-io', consumer: 'front-end', total_iops_sec: '500', read_bytes_sec: '1000' } });
  assert.equal(created.status, 200);
  const q = created.body.qos_specs;
  assert.deepEqual(q.specs, { read_bytes_sec: '1000', total_iops_sec: '500' });
  assert.equal(q.consumer, 'front-end');
  assert.equal((await s.request('POST', `${V}/qos-specs`, { qos_specs: { name: 'slow-io' } })).status, 409);
  assert.equal((await s.request('POST', `${V}/qos-specs`, { qos_specs: { name: 'x', consumer: 'middle' } })).status, 400);
  assert.equal((await s.request('GET', '/v3/proj-a/qos-specs', undefined, MEMBER)).status, 403);

  assert.deepEqual((await s.request('PUT', `${V}/qos-specs/${q.id}`, { qos_specs: { total_iops_sec: '800' } })).body, { qos_specs: { total_iops_sec: '800' } });
  assert.equal((await s.request('PUT', `${V}/qos-specs/${q.id}/delete_keys`, { keys: ['read_bytes_sec'] })).status, 202);
  assert.equal((await s.request('PUT', `${V}/qos-specs/${q.id}/delete_keys`, { keys: ['read_bytes_sec'] })).status, 404);
  assert.deepEqual((await s.request('GET', `${V}/qos-specs/${q.id}`)).body.qos_specs.specs, { total_iops_sec: '800' });

  assert.equal((await s.request('GET', `${V}/qos-specs/${q.id}/associate?vol_type_id=${typeId}`)).status, 202);
  assert.deepEqual((await s.request('GET', `${V}/qos-specs/${q.id}/associations`)).body.qos_associations, [{ association_type: 'volume_type', name: 'limited', id: typeId }]);
  assert.equal((await s.request('GET', `${V}/types/${typeId}`)).body.volume_type.qos_specs_id, q.id);
  assert.equal((await s.request('DELETE', `${V}/qos-specs/${q.id}`)).status, 400, 'still associated');
  assert.equal((await s.request('GET', `${V}/qos-specs/${q.id}/disassociate?vol_type_id=${typeId}`)).status, 202);
  assert.equal((await s.request('GET', `${V}/types/${typeId}`)).body.volume_type.qos_specs_id, null);
  assert.equal((await s.request('GET', `${V}/qos-specs/${q.id}/associate?vol_type_id=${typeId}`)).status, 202);
  assert.equal((await s.request('DELETE', `${V}/qos-specs/${q.id}?force=true`)).status, 202);
  assert.equal((await s.request('GET', `${V}/qos-specs/${q.id}`)).status, 404);
  assert.equal((await s.request('GET', `${V}/types/${typeId}`)).body.volume_type.qos_specs_id, null);
  assert.deepEqual((await s.request('GET', `${V}/qos-specs`)).body.qos_specs, []);
});
