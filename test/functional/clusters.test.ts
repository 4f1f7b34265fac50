/** Clusters: volume services sharing one backend's jobs, the clusters API (3.7), and cluster_name (3.61). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PROJECT, startTestServer, tempStateDir, waitForStatus } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const MV = { 'OpenStack-API-Version': 'volume 3.61' };

test('two volume services in one cluster share its jobs; disabling the cluster stops placement', async (t) => {
  const dir = tempStateDir(t);
  const s = await startTestServer(t, {
    ini: [
      '[DEFAULT]', 'enabled_backends = node1, node2',
      '[backend_defaults]', 'cluster = shared', `file_volume_dir = ${dir}/shared`, 'volume_backend_name = shared',
    ].join('\n'),
  });
  const detail = (await s.request('GET', `${V}/clusters/detail`, undefined, MV)).body.clusters;
  assert.equal(detail.length, 1);
  assert.equal(detail[0].name, 'shared');
  assert.equal(detail[0].num_hosts, 2);
  assert.equal(detail[0].state, 'up');
  assert.deepEqual([detail[0].replication_status, detail[0].frozen, detail[0].active_backend_id], ['disabled', false, null]);
  const before = (await s.request('GET', `${V}/clusters/detail`, undefined, { 'OpenStack-API-Version': 'volume 3.25' })).body.clusters[0];
  assert.deepEqual(['replication_status', 'frozen', 'active_backend_id'].filter((k) => k in before), [], 'replication keys come with 3.26');
  assert.equal((await s.request('GET', `${V}/clusters`, undefined, { 'OpenStack-API-Version': 'volume 3.6' })).status, 404, 'clusters exist from 3.7');
  assert.equal((await s.request('GET', '/v3/p/clusters', undefined, { ...MV, 'X-Auth-Token': 'u:p' })).status, 403);

  const ids: string[] = [];
  for (let i = 0; i < 6; i++) ids.push((await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id);
  for (const id of ids) {
    const v = await waitForStatus(s, id, 'available');
    assert.equal((await s.request('GET', `${V}/volumes/${id}`, undefined, MV)).body.volume.cluster_name, 'shared');
    assert.match(v['os-vol-host-attr:host'], /@node[12]#node[12]$/);
  }

  const off = await s.request('PUT', `${V}/clusters/disable`, { name: 'shared', binary: 'cinder-volume', disabled_reason: 'maintenance' }, MV);
  assert.equal(off.status, 200);
  assert.deepEqual(off.body.cluster, { name: 'shared', binary: 'cinder-volume', state: 'up', status: 'disabled', replication_status: 'disabled', disabled_reason: 'maintenance' }, "Cinder's summary and the reason");
  assert.equal((await s.request('GET', `${V}/clusters/shared`, undefined, MV)).body.cluster.disabled_reason, 'maintenance');
  const refused = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id;
  await waitForStatus(s, refused, 'error');
  assert.equal((await s.request('PUT', `${V}/clusters/enable`, { name: 'shared', binary: 'cinder-volume' }, MV)).body.cluster.status, 'enabled');
  await waitForStatus(s, (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id, 'available');
  assert.equal((await s.request('PUT', `${V}/clusters/enable`, { name: 'nope' }, MV)).status, 404);
  assert.equal((await s.request('PUT', `${V}/clusters/enable`, {}, MV)).status, 400);
});
