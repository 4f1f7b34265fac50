/**
 * The discovery and admin endpoints clients call (issue 6): extensions,
 * scheduler-stats/get_pools, capabilities/{host}, os-hosts, and os-services
 * enable / disable / disable-log-reason / freeze / thaw with their effect on
 * scheduling and management operations; cinderclient drives the same calls.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { noauthCinder } from '../helpers/openstack-clients.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;

const cinder = (s: TestServer, ...args: string[]): Promise<string> => noauthCinder(s, PROJECT, ...args);

test('extensions, pools, capabilities and hosts', async (t) => {
  const s = await startTestServer(t);
  const host = await waitFor('the volume service reports', async () => {
    const r = await s.request('GET', `${V}/scheduler-stats/get_pools`);
    return (r.body.pools as Array<{ name: string }>)[0]?.name.split('#')[0];
  });
  const aliases = ((await s.request('GET', `${V}/extensions`)).body.extensions as Array<{ alias: string }>).map((e) => e.alias);
  assert.ok(aliases.includes('os-volume-transfer') && aliases.includes('scheduler-stats'));
  assert.match(await cinder(s, 'list-extensions'), /VolumeTransfer/);

  const pools = (await s.request('GET', `${V}/scheduler-stats/get_pools?detail=true`)).body.pools as Array<{ name: string; capabilities: Record<string, unknown> }>;
  assert.equal(pools.length, 1);
  assert.equal(pools[0]!.capabilities.volume_backend_name, 'file');
  assert.ok((pools[0]!.capabilities.total_capacity_gb as number) > 0);
  assert.deepEqual((await s.request('GET', `${V}/scheduler-stats/get_pools?name=nope`)).body.pools, []);
  assert.match(await cinder(s, 'get-pools', '--detail'), /total_capacity_gb/);
  const type = (await s.request('POST', `${V}/types`, { volume_type: { name: 'elsewhere', extra_specs: { volume_backend_name: 'other' } } })).body.volume_type.id;
  assert.deepEqual((await s.request('GET', `${V}/scheduler-stats/get_pools?volume_type=${type}`, undefined, { 'OpenStack-API-Version': 'volume 3.35' })).body.pools, []);

  const caps = (await s.request('GET', `${V}/capabilities/${host}`)).body;
  assert.equal(caps.volume_backend_name, 'file');
  assert.equal(caps.namespace, `OS::Storage::Capabilities::${host}`);
  assert.equal(caps.properties.thin_provisioning.default, true);
  assert.equal((await s.request('GET', `${V}/capabilities/nowhere@x`)).status, 404);
  assert.match(await cinder(s, 'get-capabilities', host), /volume_backend_name/);

  const a = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id;
  const b = (await s.request('POST', `${V}/volumes`, { volume: { size: 2 } })).body.volume.id;
  await waitForStatus(s, a, 'available');
  await waitForStatus(s, b, 'available');
  await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: b } });
  const hosts = (await s.request('GET', `${V}/os-hosts`)).body.hosts as Array<{ host_name: string; service: string; 'service-status': string }>;
  assert.ok(hosts.some((h) => h.host_name === host && h.service === 'cinder-volume' && h['service-status'] === 'available'));
  const usage = (await s.request('GET', `${V}/os-hosts/${encodeURIComponent(host)}`)).body.host as Array<{ resource: Record<string, string> }>;
  assert.deepEqual(usage[0]!.resource, { project: '(total)', host, volume_count: '2', total_volume_gb: '3', snapshot_count: '1', total_snapshot_gb: '2' });
  assert.equal(usage[1]!.resource.project, PROJECT);
  assert.equal((await s.request('GET', `${V}/os-hosts/nowhere`)).status, 404);
});

test('os-services disable and freeze take effect; enable and thaw undo them', async (t) => {
  const s = await startTestServer(t);
  const host = await waitFor('the volume service', async () => ((await s.request('GET', `${V}/os-services?binary=cinder-volume`)).body.services as Array<{ host: string }>)[0]?.host);
  const v = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id;
  await waitForStatus(s, v, 'available');

  // Disabled with a reason: listed so, and new volumes find no backend.
  assert.equal((await s.request('PUT', `${V}/os-services/disable-log-reason`, { host, binary: 'cinder-volume' })).status, 400, 'the reason is required');
  const off = await s.request('PUT', `${V}/os-services/disable-log-reason`, { host, binary: 'cinder-volume', disabled_reason: 'disk swap' });
  assert.deepEqual(off.body, { host, service: '', binary: 'cinder-volume', status: 'disabled', disabled: true, disabled_reason: 'disk swap' });
  const listed = ((await s.request('GET', `${V}/os-services?binary=cinder-volume`)).body.services as Array<Record<string, unknown>>)[0]!;
  assert.deepEqual([listed.status, listed.disabled_reason], ['disabled', 'disk swap']);
  const plain = await s.request('PUT', `${V}/os-services/disable`, { host, binary: 'cinder-volume' });
  assert.deepEqual(plain.body, { host, service: '', binary: 'cinder-volume', status: 'disabled', disabled: true }, 'no reason in the plain disable view');
  const refused = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id;
  await waitForStatus(s, refused, 'error');
  assert.equal((await s.request('PUT', `${V}/os-services/enable`, { host: 'nowhere', binary: 'cinder-volume' })).status, 404);
  await cinder(s, 'service-enable', host, 'cinder-volume');
  await waitForStatus(s, (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id, 'available');

  // Frozen: management operations refused, attach-side reads still fine; thawed: they work again.
  await cinder(s, 'freeze-host', host);
  assert.equal(((await s.request('GET', `${V}/os-services?binary=cinder-volume`)).body.services as Array<{ frozen: boolean }>)[0]!.frozen, true);
  const extend = await s.request('POST', `${V}/volumes/${v}/action`, { 'os-extend': { new_size: 2 } });
  assert.equal(extend.status, 400);
  assert.match(extend.body.badRequest.message, /frozen/);
  assert.equal((await s.request('GET', `${V}/volumes/${v}`)).status, 200);
  await cinder(s, 'thaw-host', host);
  assert.equal((await s.request('POST', `${V}/volumes/${v}/action`, { 'os-extend': { new_size: 2 } })).status, 202);
});
