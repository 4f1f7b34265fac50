/** The service report: versions, defaults for older members' reports, and the rules read from it. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ServiceRow } from '../../../src/db/index.ts';
import {
  clusterCan, localEndpointOf, localPathOf, nativeConnectionFor, nativeConnectionOf, nbdEndpointOf, payloadVersionsOf, readReport, reporting, targetReaders, volumeTarget, memberTarget,
} from '../../../src/services/index.ts';
import { endpointOf, nativeStale, type Endpoint } from '../../../src/volume/connection-info.ts';

const pool = { pool_name: 'p', total_capacity_gb: 10, free_capacity_gb: 9, provisioned_capacity_gb: 1, reserved_percentage: 0, max_over_subscription_ratio: 20, thin_provisioning_support: true, thick_provisioning_support: false };
const row = (over: Partial<ServiceRow>): ServiceRow => ({
  id: 'x', host: 'h@b', binary: 'cinder-volume', backend: 'b', cluster: 'h@b', availability_zone: 'nova', version: '1', payload_versions: '{}',
  instance_id: 'i', disabled: 0, disabled_reason: null, frozen: 0, heartbeat_at: '', heartbeat_ms: 0, capabilities: null, created_at: '', updated_at: null, ...over,
} as ServiceRow);

test('a report from a member that predates versions and newer pool fields reads with their defaults', () => {
  const old = readReport({ capabilities: JSON.stringify({ volume_backend_name: 'b', vendor_name: 'Basalt', driver_version: '1', storage_protocol: 'nbd', pools: [pool] }) })!;
  assert.equal(old.report_version, 1);
  assert.deepEqual(
    [old.pools[0]!.copy_method, old.pools[0]!.multiattach, old.pools[0]!.online_extend_support, old.pools[0]!.revert_to_snapshot_support],
    ['copy', false, false, false], 'missing flags read as the safe defaults');
  assert.equal(nbdEndpointOf(old), undefined);
  assert.equal(localEndpointOf(old), undefined);
});

test('malformed or absent reports are no reports; endpoints, flags and targets', () => {
  assert.equal(readReport({ capabilities: null }), undefined);
  assert.equal(readReport({ capabilities: '{not json' }), undefined);
  assert.equal(readReport({ capabilities: '{"pools": 3}' }), undefined);
  const text = JSON.stringify({
    report_version: 1, volume_backend_name: 'b', vendor_name: 'Basalt', driver_version: '1', storage_protocol: 'nbd',
    nbd_host: '127.0.0.1', nbd_port: 10809, local_host: 'h', local_path_template: '/v/volume-{volume_id}', pools: [{ ...pool, online_extend_support: true, copy_method: 'reflink' }],
  });
  const r = readReport({ capabilities: text })!;
  assert.deepEqual(nbdEndpointOf(r), { nbd_host: '127.0.0.1', nbd_port: 10809, nbd_require_tls: false });
  assert.deepEqual(localEndpointOf(r), { local_host: 'h', local_path_template: '/v/volume-{volume_id}' });
  assert.equal(localPathOf(localEndpointOf(r)!, 'abc'), '/v/volume-abc');
  const before = readReport({ capabilities: text.replace('"local_path_template":"/v/volume-{volume_id}"', '"local_dir":"/v"') })!;
  assert.equal(localEndpointOf(before), undefined, 'a report of the release before templates offers NBD only');
  const rows = [row({ capabilities: text }), row({ binary: 'cinder-scheduler', capabilities: text }), row({ cluster: 'other', capabilities: null })];
  assert.equal(reporting(rows).length, 1, 'only volume services with a report');
  assert.equal(clusterCan(rows, 'h@b', 'online_extend_support'), true);
  assert.equal(clusterCan(rows, 'h@b', 'revert_to_snapshot_support'), false);
  assert.equal(clusterCan(rows, 'other', 'online_extend_support'), false);
  assert.deepEqual(payloadVersionsOf({ payload_versions: '{"volume.create":2}' }), { 'volume.create': 2 });
  assert.deepEqual(payloadVersionsOf({ payload_versions: 'garbage' }), {});
  assert.deepEqual(targetReaders(volumeTarget('c')), { binary: 'cinder-volume', cluster: 'c' });
  assert.deepEqual(targetReaders(memberTarget('h@b')), { binary: 'cinder-volume', host: 'h@b' });
  assert.deepEqual(targetReaders('scheduler'), { binary: 'cinder-scheduler' });
  assert.equal(targetReaders('elsewhere'), undefined);
});

test('a native connection template names each volume by its id, nested strings included; an older report has none', () => {
  const base = { volume_backend_name: 'b', vendor_name: 'Basalt', driver_version: '1', storage_protocol: 'nbd', pools: [pool] };
  assert.equal(nativeConnectionOf(readReport({ capabilities: JSON.stringify(base) })), undefined);
  const template = { driver_volume_type: 'rbd', data: { name: 'volumes/volume-{volume_id}', hosts: ['10.0.0.1'], volume_id: '{volume_id}', auth_enabled: true, secret_uuid: null } };
  const report = readReport({ capabilities: JSON.stringify({ ...base, native_connection: template }) });
  const id = '0b6f4a9e-3c1d-4e2f-9a8b-7c6d5e4f3a2b';
  assert.deepEqual(nativeConnectionFor(nativeConnectionOf(report)!, id), {
    driver_volume_type: 'rbd', data: { name: `volumes/volume-${id}`, hosts: ['10.0.0.1'], volume_id: id, auth_enabled: true, secret_uuid: null },
  });
  assert.equal(template.data.volume_id, '{volume_id}', 'the template is left as it was');
});

test('the native connection is the serving site\'s: home, the failed-over target, a group\'s target; connection info naming another site is stale', () => {
  const base = { volume_backend_name: 'b', vendor_name: 'Basalt', driver_version: '1', storage_protocol: 'rbd', pools: [pool], nbd_host: '127.0.0.1', nbd_port: 10809, replication_targets: ['site-b'] };
  const at = (cluster: string, port: string) => ({ driver_volume_type: 'rbd', data: { name: 'rbd/volume-{volume_id}', hosts: ['127.0.0.1'], ports: [port], cluster_name: cluster, volume_id: '{volume_id}' } });
  const id = '0b6f4a9e-3c1d-4e2f-9a8b-7c6d5e4f3a2b';
  // Just failed over: the report still says home (its next heartbeat will not), the row says site-b.
  const report = { ...base, native_connection: at('ceph', '6789'), native_connection_targets: { 'site-b': at('site-b', '7789'), default: at('ceph', '6789') } };
  const clusterOf = (e: Endpoint | undefined) => e?.native?.data.cluster_name;
  assert.equal(clusterOf(endpointOf(row({ capabilities: JSON.stringify(report) }))), 'ceph');
  assert.equal(clusterOf(endpointOf(row({ capabilities: JSON.stringify(report), active_backend_id: 'site-b' }))), 'site-b');
  // Just failed back: the report still says site-b, the row home.
  const back = { ...report, native_connection: at('site-b', '7789') };
  assert.equal(clusterOf(endpointOf(row({ capabilities: JSON.stringify(back), active_backend_id: null }))), 'ceph');
  // A member of a group failed over alone is at the first target; a report without templates per site gives native_connection.
  assert.equal(clusterOf(endpointOf(row({ capabilities: JSON.stringify(report) }), { replication_status: 'failed-over' })), 'site-b');
  assert.equal(clusterOf(endpointOf(row({ capabilities: JSON.stringify({ ...base, native_connection: at('ceph', '6789') }), active_backend_id: 'site-b' }))), 'ceph');

  const info = (cluster: string, port: string) => JSON.stringify({ driver_volume_type: 'rbd', data: { ...nativeConnectionFor(at(cluster, port), id).data, access_mode: 'rw', encrypted: false, qos_specs: null } });
  const failedOver = endpointOf(row({ capabilities: JSON.stringify(report), active_backend_id: 'site-b' }));
  assert.equal(nativeStale(info('ceph', '6789'), failedOver, id), true, 'home\'s info after a failover');
  assert.equal(nativeStale(info('site-b', '7789'), failedOver, id), false, 'what the host was given at attach time is not compared (access_mode, qos_specs)');
  assert.equal(nativeStale(info('site-b', '6789'), failedOver, id), true, 'other monitors');
  assert.equal(nativeStale(JSON.stringify({ driver_volume_type: 'nbd', data: { host: '127.0.0.1', port: 10809 } }), failedOver, id), false, 'NBD: the exporters decide');
  assert.equal(nativeStale(info('ceph', '6789'), endpointOf(row({ capabilities: JSON.stringify(base) })), id), false, 'no native connection now: left alone');
  assert.equal(nativeStale(null, failedOver, id), false, 'no connector yet');
});
