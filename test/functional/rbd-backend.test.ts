/**
 * A Basalt whose one backend is `volume_driver = rbd` on a real one-node Ceph
 * cluster (test/helpers/ceph.ts): volumes, snapshots, volumes from snapshots
 * and clones through the API are RBD images, snapshots and COW clones in the
 * configured pool, the pool's capacity comes from the cluster, and a real NBD
 * client reads and writes a volume through its attachment.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { startCeph } from '../helpers/ceph.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const run = promisify(execFile);
const V = `/v3/${PROJECT}`;
const MV = { 'OpenStack-API-Version': 'volume 3.54' };
const ceph = await startCeph();
after(() => ceph.stop());

async function rbdServer(t: Parameters<typeof startTestServer>[0]): Promise<{ s: TestServer; pool: string }> {
  const pool = await ceph.newPool();
  const s = await startTestServer(t, {
    ini: [
      '[DEFAULT]', 'enabled_backends = ceph',
      '[ceph]', 'volume_driver = rbd', `rbd_pool = ${pool}`, `rbd_user = ${ceph.user}`,
      `rbd_ceph_conf = ${ceph.confPath}`, `rbd_keyring_conf = ${ceph.keyringPath}`, 'rbd_max_clone_depth = 5',
    ].join('\n'),
  });
  return { s, pool };
}

/** `rbd info` of an image of `pool`. */
async function info(pool: string, image: string): Promise<{ size: number; parent?: { image: string; snapshot: string } }> {
  return JSON.parse(await ceph.rbd('info', '--format', 'json', `${pool}/${image}`)) as { size: number; parent?: { image: string; snapshot: string } };
}

async function created(s: TestServer, body: Record<string, unknown>): Promise<string> {
  const r = await s.request('POST', `${V}/volumes`, { volume: body });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await waitForStatus(s, r.body.volume.id, 'available');
  return r.body.volume.id;
}

test('volumes, snapshots, volumes from snapshots and clones are RBD images, snapshots and COW clones', async (t) => {
  const { s, pool } = await rbdServer(t);
  const vol = await created(s, { size: 1 });
  assert.equal((await info(pool, `volume-${vol}`)).size, 1024 ** 3);
  const shown = (await s.request('GET', `${V}/volumes/${vol}`)).body.volume;
  assert.match(shown['os-vol-host-attr:host'], /@ceph#ceph$/);

  const snap = await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: vol, name: 's' } });
  assert.equal(snap.status, 202);
  const snapId = snap.body.snapshot.id as string;
  await waitFor('snapshot available', async () => (await s.request('GET', `${V}/snapshots/${snapId}`)).body.snapshot.status === 'available');
  assert.ok((await ceph.rbd('snap', 'ls', `${pool}/volume-${vol}`)).includes(`snapshot-${snapId}`));

  const fromSnap = await created(s, { size: 2, snapshot_id: snapId });
  const p = (await info(pool, `volume-${fromSnap}`));
  assert.deepEqual([p.size, p.parent?.image, p.parent?.snapshot], [2 * 1024 ** 3, `volume-${vol}`, `snapshot-${snapId}`]);
  const clone = await created(s, { size: 1, source_volid: vol });
  assert.equal((await info(pool, `volume-${clone}`)).parent?.image, `volume-${vol}`);

  assert.equal((await s.request('POST', `${V}/volumes/${vol}/action`, { 'os-extend': { new_size: 3 } })).status, 202);
  await waitFor('extended', async () => (await s.request('GET', `${V}/volumes/${vol}`)).body.volume.size === 3);
  assert.equal((await info(pool, `volume-${vol}`)).size, 3 * 1024 ** 3);

  const pools = await s.request('GET', `${V}/scheduler-stats/get_pools?detail=true`);
  const caps = pools.body.pools[0].capabilities;
  assert.ok(caps.total_capacity_gb > 0 && caps.free_capacity_gb > 0, JSON.stringify(caps));

  // Delete all: the snapshot first (its clone is flattened), then the volumes in any order.
  assert.equal((await s.request('DELETE', `${V}/snapshots/${snapId}`)).status, 202);
  await waitFor('snapshot gone', async () => (await s.request('GET', `${V}/snapshots/${snapId}`)).status === 404);
  for (const id of [vol, clone, fromSnap]) {
    assert.equal((await s.request('DELETE', `${V}/volumes/${id}`)).status, 202);
    await waitFor(`volume ${id} gone`, async () => (await s.request('GET', `${V}/volumes/${id}`)).status === 404);
  }
  assert.equal((await ceph.rbd('ls', pool)).trim(), '', 'nothing is left in the pool');
});

test('an attached RBD volume is read and written through its NBD export', async (t) => {
  const { s, pool } = await rbdServer(t);
  const vol = await created(s, { size: 1 });
  const reserved = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, instance_uuid: '11111111-2222-3333-4444-555555555555' } }, MV);
  const att = reserved.body.attachment;
  const updated = await s.request('PUT', `${V}/attachments/${att.id}`, { attachment: { connector: { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.test', mode: 'rw' } } }, MV);
  assert.equal(updated.status, 200, JSON.stringify(updated.body));
  const uri = updated.body.attachment.connection_info.data.uri as string;
  assert.equal(JSON.parse((await run('nbdinfo', ['--json', uri])).stdout).exports[0]['can_multi_conn'], true, 'handles share the image: multi-conn');
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 1M 64k', uri]);
  assert.doesNotMatch((await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x42 1M 64k', uri])).stdout, /verification failed/);
  // The bytes are in the image, as another librbd client reads them.
  const copy = `${process.env.TMPDIR ?? '/tmp'}/basalt-rbd-export-${vol}`;
  t.after(() => run('rm', ['-f', copy]));
  await ceph.rbd('export', `${pool}/volume-${vol}`, copy);
  const { stdout } = await run('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x42 1M 64k', copy]);
  assert.doesNotMatch(stdout, /verification failed/);
  // Many requests on several connections at once (nbdcopy uses multi-conn): every byte lands.
  const source = `${copy}.src`;
  t.after(() => run('rm', ['-f', source]));
  const data = randomBytes(48 * 1024 * 1024);
  fs.writeFileSync(source, data);
  await run('nbdcopy', ['--connections=4', '--requests=16', source, uri]);
  await ceph.rbd('export', `${pool}/volume-${vol}`, `${copy}.after`);
  t.after(() => run('rm', ['-f', `${copy}.after`]));
  assert.equal(fs.statSync(`${copy}.after`).size, 1024 ** 3);
  const after = Buffer.alloc(data.length);
  const fd = fs.openSync(`${copy}.after`, 'r');
  fs.readSync(fd, after, 0, after.length, 0);
  fs.closeSync(fd);
  assert.ok(after.equals(data), 'the image holds what nbdcopy wrote');
  assert.equal((await s.request('DELETE', `${V}/attachments/${att.id}`, undefined, MV)).status, 200);
});
