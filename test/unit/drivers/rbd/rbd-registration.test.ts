/**
 * The rbd backend's options that are checked before any cluster is reached:
 * sending the keyring to hosts (`rbd_send_keyring_to_hosts`) is an explicit
 * opt-in that needs a keyring to send.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { rbdRegistration } from '../../../../src/drivers/index.ts';
import { RBD_ADDON_PATH } from '../../../../src/drivers/rbd/rbd-addon.ts';

/** A backend section's options as the configuration gives them, `overrides` applied. */
function options(overrides: Record<string, unknown> = {}): never {
  return {
    rbd_pool: 'rbd', rbd_user: 'admin', rbd_ceph_conf: '', rbd_keyring_conf: '', rbd_send_keyring_to_hosts: false, rbd_secret_uuid: '',
    rbd_flatten_volume_from_snapshot: false, rbd_max_clone_depth: 5, rbd_store_chunk_size: 4, report_discard_supported: false,
    rados_connect_timeout: 30, rbd_cluster_name: 'ceph', rbd_connection: 'rbd', ...overrides,
  } as never;
}

test('rbd_send_keyring_to_hosts is off unless set: the keyring is Basalt\'s own', () => {
  assert.equal(rbdRegistration.options.rbd_send_keyring_to_hosts.default, false);
});

test('rbd_send_keyring_to_hosts without rbd_keyring_conf is refused when the backend is configured', () => {
  assert.throws(() => rbdRegistration.create({ backendName: 'ceph', options: options({ rbd_send_keyring_to_hosts: true }) }),
    (e: { code: string; message: string }) => e.code === 'CONFIG_INVALID' && /rbd_send_keyring_to_hosts needs rbd_keyring_conf/.test(e.message));
});

test('rbd_send_keyring_to_hosts with a keyring that cannot be read leaves the backend down, naming the file', { skip: !fs.existsSync(RBD_ADDON_PATH) && 'the RBD addon is not built' }, async () => {
  const driver = rbdRegistration.create({ backendName: 'ceph', options: options({ rbd_send_keyring_to_hosts: true, rbd_keyring_conf: '/nonexistent/basalt.keyring' }) });
  await assert.rejects(driver.init!(), (e: { code: string; message: string; retryable?: boolean }) =>
    e.code === 'DRIVER_FAILED' && e.message.includes('/nonexistent/basalt.keyring (rbd_keyring_conf) cannot be read: ENOENT') && !e.retryable);
});
