/**
 * The RBD addon is optional: the build skips it without Ceph's headers (so
 * `npm ci` succeeds there), and loading it says exactly what to install or
 * run. Machines without librbd-dev or librbd1 are made by hiding them in a
 * private mount namespace of a child process (`unshare -m`, as root): the
 * host's files are untouched.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

const ROOT = path.resolve(import.meta.dirname, '../../../..');
const CHILD = path.join(import.meta.dirname, 'rbd-addon-child.ts');
const BUILT = path.join(ROOT, 'native/rbd/build/Release/basalt_rbd.node');

/** Runs `script` in bash inside a private mount namespace, from the repository's folder. */
function isolated(script: string, env: Record<string, string> = {}): string {
  return execFileSync('unshare', ['-m', '--propagation', 'private', 'bash', '-euc', script], { cwd: ROOT, env: { ...process.env, ...env }, encoding: 'utf8' });
}

const loadIn = (setup: string, env: Record<string, string> = {}): string =>
  isolated(`${setup}\n${JSON.stringify(process.execPath)} --import tsx ${JSON.stringify(CHILD)}`, env).trim();

test('without librbd-dev the build is skipped and succeeds, and the driver names the packages to install', () => {
  const hide = 'mount -t tmpfs tmpfs /usr/include/rbd; mount -t tmpfs tmpfs /usr/include/rados';
  const out = isolated(`${hide}\n${JSON.stringify(process.execPath)} scripts/build-rbd-addon.mjs`);
  assert.match(out, /RBD addon not built: .*librbd\.h.* missing \(install librbd-dev and librados-dev/);
  const msg = loadIn(hide, { BASALT_RBD_ADDON_PATH: '/nonexistent/basalt_rbd.node' });
  assert.match(msg, /install the packages librbd-dev and librados-dev/);
  assert.match(msg, /node scripts\/build-rbd-addon\.mjs/);
});

test('with the headers but no build, the driver says to build the addon', () => {
  assert.match(loadIn('', { BASALT_RBD_ADDON_PATH: '/nonexistent/basalt_rbd.node' }), /not built: run `node scripts\/build-rbd-addon\.mjs`/);
});

test('a built addon whose Ceph libraries are gone names librbd1 and librados2', (t) => {
  assert.ok(fs.existsSync(BUILT), 'the addon is built (scripts/test.sh builds it once librbd-dev is installed)');
  const empty = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-rbd-')), 'empty');
  t.after(() => fs.rmSync(path.dirname(empty), { recursive: true, force: true }));
  fs.writeFileSync(empty, '');
  // The librbd the addon links against, as the dynamic loader finds it.
  const lib = /librbd\.so\.1 => (\S+)/.exec(execFileSync('ldd', [BUILT], { encoding: 'utf8' }))![1]!;
  const msg = loadIn(`mount --bind ${JSON.stringify(empty)} ${JSON.stringify(fs.realpathSync(lib))}`);
  assert.match(msg, /install the packages librbd1 and librados2/);
  assert.equal(loadIn(''), 'loaded', 'and with them it loads');
});

test('calls that wait for the cluster leave libuv\'s thread pool free (each runs on a thread of its own)', async (t) => {
  const { loadRbdAddon } = await import('../../../../src/drivers/rbd/rbd-addon.ts');
  const { freePort } = await import('../../../helpers/net.ts');
  const rbd = loadRbdAddon();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-rbd-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const conf = path.join(dir, 'ceph.conf');
  fs.writeFileSync(conf, `[global]\nmon_host = 127.0.0.1:${await freePort()}\n`); // nobody listens
  const poolSize = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
  const started = performance.now();
  // More calls than the pool has threads, each waiting 3 s for a monitor that never answers.
  const stuck = Array.from({ length: poolSize + 2 }, () => rbd.connect(conf, 'admin', null, { client_mount_timeout: '3' }).then(() => 'connected', (e: { code: string }) => e.code));
  const fsMs = await fs.promises.stat(conf).then(() => performance.now() - started); // needs a pool thread
  assert.ok(fsMs < 1500, `fs answered in ${fsMs.toFixed(0)} ms while ${stuck.length} calls waited for the cluster`);
  assert.deepEqual(new Set(await Promise.all(stuck)), new Set(['ETIMEDOUT']));
});

test('an rbd_store_chunk_size that is not a power of two is refused when the backend is configured', async () => {
  const { rbdRegistration } = await import('../../../../src/drivers/index.ts');
  const options = {
    rbd_pool: 'rbd', rbd_user: 'admin', rbd_ceph_conf: '', rbd_keyring_conf: '', rbd_send_keyring_to_hosts: false, rbd_secret_uuid: '', rbd_flatten_volume_from_snapshot: false,
    rbd_max_clone_depth: 5, rbd_store_chunk_size: 3, report_discard_supported: false, rados_connect_timeout: 30, rbd_blocklist_check_interval: 5,
    rbd_cluster_name: 'ceph', rbd_connection: 'rbd',
  };
  assert.throws(() => rbdRegistration.create({ backendName: 'ceph', options }), (e: { code: string; message: string }) => e.code === 'CONFIG_INVALID' && /power of two/.test(e.message));
});
