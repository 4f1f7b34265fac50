/** `replication_device` (issue 16): Cinder's `backend_id:NAME`, several separated by `;`, refused at start when malformed. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { replicationDevices } from '../../../src/config/index.ts';
import { RbdDriver } from '../../../src/drivers/index.ts';
import { ConfigError } from '../../../src/errors/index.ts';

const of = (text: string) => replicationDevices({ name: 'alpha', replication_device: text });

test('replication_device names targets by backend_id', () => {
  assert.deepEqual(of(''), []);
  assert.deepEqual(of('backend_id:beta'), [{ backendId: 'beta', options: {} }]);
  assert.deepEqual(of(' backend_id: beta ; backend_id:gamma '), [{ backendId: 'beta', options: {} }, { backendId: 'gamma', options: {} }]);
});

test('a driver that replicates itself takes its own keys (rbd: a second Ceph cluster), and only those', () => {
  const rbd = ['conf', 'user', 'keyring', 'secret_uuid'];
  assert.deepEqual(replicationDevices({ name: 'alpha', replication_device: 'backend_id:site-b, conf:/etc/ceph/b.conf, user:cinder' }, rbd),
    [{ backendId: 'site-b', options: { conf: '/etc/ceph/b.conf', user: 'cinder' } }]);
  assert.throws(() => replicationDevices({ name: 'alpha', replication_device: 'backend_id:site-b, pool:other' }, rbd),
    (err: unknown) => err instanceof ConfigError && /knows only the keys backend_id, conf, user, keyring, secret_uuid here, not pool/.test(err.message));
  assert.throws(() => of('backend_id:beta, conf:/etc/ceph/b.conf'), (err: unknown) => err instanceof ConfigError && /not conf/.test(err.message), 'a backend whose driver takes no keys');
});

test('a malformed replication_device is refused, naming the option and the section', () => {
  for (const bad of ['beta', 'backend_id:', 'san_ip:10.0.0.1,backend_id:beta', 'backend_id:beta;backend_id:beta', 'backend_id:default']) {
    assert.throws(() => of(bad), (err: unknown) => err instanceof ConfigError && /replication_device in \[alpha\]/.test(err.message), bad);
  }
});

test('an rbd backend mirrors to one cluster: a second replication_device is refused at start, naming both', () => {
  const target = (backendId: string) => ({ backendId, confPath: `/etc/ceph/${backendId}.conf`, user: 'admin', keyringPath: '', secretUuid: '' });
  const options = { poolName: 'ceph', cephPool: 'volumes', user: 'admin', confPath: '', keyringPath: '', chunkSizeMiB: 4, flattenVolumeFromSnapshot: false, maxCloneDepth: 5, connectTimeoutSeconds: 5 };
  assert.doesNotThrow(() => new RbdDriver({ ...options, replicationTargets: [target('site-b')] }));
  assert.throws(() => new RbdDriver({ ...options, replicationTargets: [target('site-b'), target('site-c')] }),
    (err: unknown) => err instanceof ConfigError && /replication_device in \[ceph\] names 2 clusters \(site-b, site-c\): an rbd backend mirrors its pool to one other cluster/.test(err.message));
});
