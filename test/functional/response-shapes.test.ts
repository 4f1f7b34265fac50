/**
 * Every route tempest has a schema for answers in tempest's shape (issue 11):
 * the request helper judges each answer (test/schemas/), and this file reaches
 * the routes the other functional tests leave out, then reads every resource
 * at 3.0, at the microversions where tempest's schemas change, and at the
 * newest one.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_VERSION } from '../../src/api/index.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const at = (version: string): Record<string, string> => ({ 'OpenStack-API-Version': `volume ${version}` });

/** Waits for a snapshot to be available. */
async function snapshotAvailable(s: TestServer, id: string): Promise<void> {
  await waitFor(`snapshot ${id}`, async () => (await s.request('GET', `${V}/snapshots/${id}`)).body.snapshot.status === 'available');
}

test('routes the other functional tests leave out answer in tempest\'s shapes', async (t) => {
  const s = await startTestServer(t);
  const volume = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id as string;
  await waitForStatus(s, volume, 'available');

  // Snapshot metadata: show, show an item, replace, update an item.
  const snap = (await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: volume, metadata: { a: '1' } } })).body.snapshot.id as string;
  await snapshotAvailable(s, snap);
  assert.deepEqual((await s.request('GET', `${V}/snapshots/${snap}/metadata`)).body, { metadata: { a: '1' } });
  assert.deepEqual((await s.request('GET', `${V}/snapshots/${snap}/metadata/a`)).body, { meta: { a: '1' } });
  assert.deepEqual((await s.request('PUT', `${V}/snapshots/${snap}/metadata`, { metadata: { b: '2' } })).body, { metadata: { b: '2' } });
  assert.deepEqual((await s.request('PUT', `${V}/snapshots/${snap}/metadata/b`, { meta: { b: '3' } })).body, { meta: { b: '3' } });

  // A reserved attachment, shown (3.27), then force-detached.
  const attachment = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: volume, instance_uuid: '11111111-2222-3333-4444-555555555555' } }, at('3.27'));
  assert.equal(attachment.status, 200, JSON.stringify(attachment.body));
  const attachmentId = attachment.body.attachment.id as string;
  assert.equal((await s.request('GET', `${V}/attachments/${attachmentId}`, undefined, at('3.27'))).status, 200);
  assert.equal((await s.request('POST', `${V}/volumes/${volume}/action`, { 'os-force_detach': { attachment_id: attachmentId } })).status, 202);
  await waitForStatus(s, volume, 'available');

  // Type extra specs and private access given and taken back.
  const type = (await s.request('POST', `${V}/types`, { volume_type: { name: 'private', 'os-volume-type-access:is_public': false, extra_specs: { k: 'v' } } })).body.volume_type.id as string;
  assert.deepEqual((await s.request('GET', `${V}/types/${type}/extra_specs`)).body, { extra_specs: { k: 'v' } });
  assert.equal((await s.request('POST', `${V}/types/${type}/action`, { addProjectAccess: { project: 'proj-a' } })).status, 202);
  assert.equal((await s.request('POST', `${V}/types/${type}/action`, { removeProjectAccess: { project: 'proj-a' } })).status, 202);

  // QoS specs: associate, then disassociate from every type.
  const qos = (await s.request('POST', `${V}/qos-specs`, { qos_specs: { name: 'q', consumer: 'back-end', total_iops_sec: '100' } })).body.qos_specs.id as string;
  assert.equal((await s.request('GET', `${V}/qos-specs/${qos}/associate?vol_type_id=${type}`)).status, 202);
  assert.equal((await s.request('GET', `${V}/qos-specs/${qos}/disassociate_all`)).status, 202);

  // Transfers shown and withdrawn, under both paths.
  for (const [base, version] of [['os-volume-transfer', '3.0'], ['volume-transfers', '3.55'], ['volume-transfers', MAX_VERSION]] as const) {
    const offered = await s.request('POST', `${V}/${base}`, { transfer: { volume_id: volume } }, at(version));
    assert.equal(offered.status, 202, JSON.stringify(offered.body));
    const id = offered.body.transfer.id as string;
    assert.equal((await s.request('GET', `${V}/${base}/${id}`, undefined, at(version))).status, 200);
    assert.equal((await s.request('DELETE', `${V}/${base}/${id}`, undefined, at(version))).status, 202);
  }

  // Services: disable, enable; freeze, thaw.
  const host = await waitFor('the volume service', async () => ((await s.request('GET', `${V}/os-services?binary=cinder-volume`)).body.services as Array<{ host: string }>)[0]?.host);
  assert.equal((await s.request('PUT', `${V}/os-services/disable`, { host, binary: 'cinder-volume' })).status, 200);
  assert.equal((await s.request('PUT', `${V}/os-services/enable`, { host, binary: 'cinder-volume' })).status, 200);
  assert.equal((await s.request('PUT', `${V}/os-services/freeze`, { host })).status, 200);
  assert.equal((await s.request('PUT', `${V}/os-services/thaw`, { host })).status, 200);
});

test('every resource reads in tempest\'s shapes at 3.0, where its schemas change, and at the newest microversion', async (t) => {
  const s = await startTestServer(t, { env: { BASALT_BACKEND_DEFAULTS__TOTAL_CAPACITY_GB: '10', BASALT_BACKEND_DEFAULTS__MAX_OVER_SUBSCRIPTION_RATIO: '1' } });
  const type = (await s.request('POST', `${V}/types`, { volume_type: { name: 'shapes', extra_specs: { 'vendor:k': 'v' } } })).body.volume_type.id as string;
  const volume = (await s.request('POST', `${V}/volumes`, { volume: { size: 1, volume_type: 'shapes', metadata: { m: '1' } } })).body.volume.id as string;
  await waitForStatus(s, volume, 'available');
  const snap = (await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: volume, metadata: { a: '1' } } })).body.snapshot.id as string;
  await snapshotAvailable(s, snap);
  const qos = (await s.request('POST', `${V}/qos-specs`, { qos_specs: { name: 'q', total_iops_sec: '100' } })).body.qos_specs.id as string;
  const offered = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id as string;
  await waitForStatus(s, offered, 'available');
  const transfer = (await s.request('POST', `${V}/os-volume-transfer`, { transfer: { volume_id: offered } })).body.transfer.id as string;
  // A volume no backend can hold leaves a user message.
  const failed = (await s.request('POST', `${V}/volumes`, { volume: { size: 50 } })).body.volume.id as string;
  await waitForStatus(s, failed, 'error');
  const message = await waitFor('a user message', async () => (await s.request('GET', `${V}/messages`, undefined, at('3.3'))).body.messages[0]?.id as string | undefined);
  const host = await waitFor('the volume service', async () => ((await s.request('GET', `${V}/os-services?binary=cinder-volume`)).body.services as Array<{ host: string }>)[0]?.host);
  // An encrypted type, a group type and a group of the volume's type.
  const encrypted = (await s.request('POST', `${V}/types`, { volume_type: { name: 'sealed' } })).body.volume_type.id as string;
  assert.equal((await s.request('POST', `${V}/types/${encrypted}/encryption`, { encryption: { provider: 'luks', cipher: 'aes-xts-plain64', key_size: 256, control_location: 'front-end' } })).status, 200);
  const groupType = (await s.request('POST', `${V}/group_types`, { group_type: { name: 'gt', group_specs: { k: 'v' } } }, at('3.11'))).body.group_type.id as string;
  const group = (await s.request('POST', `${V}/groups`, { group: { name: 'g', group_type: groupType, volume_types: [type] } }, at('3.13'))).body.group.id as string;
  await waitFor(`group ${group}`, async () => (await s.request('GET', `${V}/groups/${group}`, undefined, at('3.13'))).body.group.status === 'available');

  // A backup of the volume, read at every version below.
  const backup = (await s.request('POST', `${V}/backups`, { backup: { volume_id: volume, name: 'b' } })).body.backup.id as string;
  await waitFor(`backup ${backup}`, async () => (await s.request('GET', `${V}/backups/${backup}`)).body.backup.status === 'available');

  const reads = [
    '/backups', '/backups/detail', `/backups/${backup}`,
    '/volumes', '/volumes/detail', '/volumes/detail?with_count=true', '/volumes?with_count=true', `/volumes/${volume}`, '/volumes/summary',
    `/volumes/${volume}/metadata`, `/volumes/${volume}/metadata/m`,
    '/snapshots', '/snapshots/detail', '/snapshots/detail?with_count=true', `/snapshots/${snap}`, `/snapshots/${snap}/metadata`,
    '/types', `/types/${type}`, `/types/${type}/extra_specs`, `/types/${type}/extra_specs/vendor:k`,
    '/qos-specs', `/qos-specs/${qos}`, `/qos-specs/${qos}/associations`,
    `/os-quota-sets/${PROJECT}`, `/os-quota-sets/${PROJECT}?usage=true`, `/os-quota-sets/${PROJECT}/defaults`, '/os-quota-class-sets/default', '/limits',
    '/messages', `/messages/${message}`,
    '/os-volume-transfer', '/os-volume-transfer/detail', `/os-volume-transfer/${transfer}`, '/volume-transfers', '/volume-transfers/detail', `/volume-transfers/${transfer}`,
    '/os-services', '/os-hosts', `/os-hosts/${encodeURIComponent(host)}`, '/extensions', '/scheduler-stats/get_pools', '/scheduler-stats/get_pools?detail=true',
    `/capabilities/${encodeURIComponent(host)}`,
    `/types/${encrypted}/encryption`, `/types/${encrypted}/encryption/provider`,
    '/group_types', `/group_types/${groupType}`, `/group_types/${groupType}/group_specs`, `/group_types/${groupType}/group_specs/k`,
    '/groups', '/groups/detail', `/groups/${group}`, `/groups/${group}?list_volume=true`, '/group_snapshots', '/group_snapshots/detail',
  ];
  // 3.0, then each microversion where a tempest client switches schemas or Cinder adds a key, then the newest.
  for (const version of ['3.0', '3.7', '3.14', '3.25', '3.38', '3.41', '3.45', '3.55', '3.57', '3.58', '3.61', '3.63', '3.64', '3.65', '3.69', MAX_VERSION]) {
    for (const path of reads) {
      const r = await s.request('GET', `${V}${path}`, undefined, at(version));
      // Below its microversion a route is a 404 (judged as a fault); anything else must succeed.
      assert.ok(r.status === 200 || r.status === 404, `${path} at ${version}: ${r.status} ${JSON.stringify(r.body)}`);
    }
  }
  // Creates and updates at the microversions where their schemas change.
  for (const version of ['3.61', '3.63', '3.64', '3.65', '3.69', MAX_VERSION]) {
    const created = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } }, at(version));
    assert.equal(created.status, 202);
    await waitForStatus(s, created.body.volume.id, 'available');
    assert.equal((await s.request('DELETE', `${V}/volumes/${created.body.volume.id}`, undefined, at(version))).status, 202);
    assert.equal((await s.request('PUT', `${V}/volumes/${volume}`, { volume: { name: `v-${version}` } }, at(version))).status, 200);
    assert.equal((await s.request('PUT', `${V}/snapshots/${snap}`, { snapshot: { name: `s-${version}` } }, at(version))).status, 200);
  }
  assert.equal((await s.request('GET', '/')).status, 300);
  assert.equal((await s.request('GET', '/v3/')).status, 200);
});
