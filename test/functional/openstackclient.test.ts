/**
 * The README's `openstack` recipe (issue 18, rough edge: there was none):
 * Debian's python3-openstackclient against Basalt with noauth's `user:project`
 * token as an admin token — volume types, QoS specs (the part that now takes
 * effect), volumes and snapshots.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { noauthOpenstack } from '../helpers/openstack-clients.ts';
import { PROJECT, startTestServer, waitForStatus } from '../helpers/server.ts';

test('openstack volume, type, qos and snapshot commands against Basalt', { timeout: 240_000 }, async (t) => {
  const s = await startTestServer(t);
  const os = async (...args: string[]): Promise<any> => { // eslint-disable-line @typescript-eslint/no-explicit-any
    const stdout = await noauthOpenstack(s, PROJECT, '--os-volume-api-version', '3.54', ...args, ...(args.includes('associate') || args.includes('delete') ? [] : ['-f', 'json']));
    return stdout.trim() ? JSON.parse(stdout) : undefined;
  };
  assert.equal((await os('volume', 'type', 'create', 'gold')).name, 'gold');
  const qos = await os('volume', 'qos', 'create', '--property', 'total_iops_sec=500', 'gold-qos');
  assert.equal(qos.consumer, 'both', 'openstackclient\'s default consumer');
  await os('volume', 'qos', 'associate', 'gold-qos', 'gold');
  assert.deepEqual((await os('volume', 'qos', 'show', 'gold-qos')).associations, ['gold']);

  const v = await s.request('POST', `/v3/${PROJECT}/volumes`, { volume: { size: 1, name: 'v1', volume_type: 'gold' } });
  await waitForStatus(s, v.body.volume.id, 'available');
  const listed = await os('volume', 'list');
  assert.deepEqual(listed.map((x: { Name: string; Status: string }) => [x.Name, x.Status]), [['v1', 'available']]);
  assert.equal((await os('volume', 'show', 'v1')).type, 'gold');
  const snap = await os('volume', 'snapshot', 'create', '--volume', 'v1', 's1');
  assert.equal(snap.name, 's1');
  for (let i = 0; i < 600 && (await os('volume', 'snapshot', 'show', 's1')).status !== 'available'; i++) await new Promise((r) => setTimeout(r, 100));
  assert.equal((await os('volume', 'snapshot', 'list'))[0].Name, 's1');
  await os('volume', 'snapshot', 'delete', 's1');
});
