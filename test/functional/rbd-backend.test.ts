/**
 * A Basalt whose one backend is `volume_driver = rbd` on a real one-node Ceph
 * cluster (test/helpers/ceph.ts): volumes, snapshots, volumes from snapshots
 * and clones through the API are RBD images, snapshots and COW clones in the
 * configured pool, the pool's capacity comes from the cluster; an attachment
 * gives Cinder's rbd connection info, with which QEMU's own librbd (qemu-io
 * on an `rbd:` URL) writes the volume with the host's own keyring (no secret
 * leaves Basalt unless `rbd_send_keyring_to_hosts` opts in), and with
 * `rbd_connection = nbd` a real NBD client reads and writes it through
 * Basalt's export; a pool at its quota answers ENOSPC there and refuses
 * creates, and works again when the quota is lifted; an incremental backup
 * of a snapshot reads only the objects librbd's diff says changed; an image
 * deleted behind Basalt's back fails operations with user messages, never 5xx.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { rbdUrl, type RbdConnectionData } from '../../src/cli/rbd-url.ts';
import { RbdDriver } from '../../src/drivers/index.ts';
import { startCeph } from '../helpers/ceph.ts';
import { fileDigest } from '../helpers/file-digest.ts';
import { openExport, simpleRequest } from '../helpers/nbd-raw.ts';
import { PROJECT, startTestServer, tempStateDir, testDatabase, waitFor, waitForStatus, type TestServer, type TestServerOptions } from '../helpers/server.ts';

const run = promisify(execFile);
const V = `/v3/${PROJECT}`;
const MV = { 'OpenStack-API-Version': 'volume 3.54' };
const ceph = await startCeph();
after(() => ceph.stop());

async function rbdServer(t: Parameters<typeof startTestServer>[0], extra: string[] = [], o: TestServerOptions = {}): Promise<{ s: TestServer; pool: string }> {
  const pool = await ceph.newPool();
  const s = await startTestServer(t, {
    ...o,
    ini: [
      '[DEFAULT]', 'enabled_backends = ceph',
      '[ceph]', 'volume_driver = rbd', `rbd_pool = ${pool}`, `rbd_user = ${ceph.user}`,
      `rbd_ceph_conf = ${ceph.confPath}`, `rbd_keyring_conf = ${ceph.keyringPath}`, 'rbd_max_clone_depth = 5', ...extra,
    ].join('\n'),
  });
  return { s, pool };
}

/** Reserves and connects an attachment of `vol` for a compute host; its connection info. */
async function attach(s: TestServer, vol: string): Promise<{ id: string; info: { driver_volume_type: string; data: Record<string, unknown> } }> {
  const reserved = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, instance_uuid: '11111111-2222-3333-4444-555555555555' } }, MV);
  assert.equal(reserved.status, 200, JSON.stringify(reserved.body));
  const id = reserved.body.attachment.id as string;
  const updated = await s.request('PUT', `${V}/attachments/${id}`, { attachment: { connector: { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.test', mode: 'rw' } } }, MV);
  assert.equal(updated.status, 200, JSON.stringify(updated.body));
  return { id, info: updated.body.attachment.connection_info };
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

test('with rbd_connection = nbd an attached RBD volume is read and written through its NBD export', async (t) => {
  const { s, pool } = await rbdServer(t, ['rbd_connection = nbd']);
  const vol = await created(s, { size: 1 });
  const { id: attId, info } = await attach(s, vol);
  assert.equal(info.driver_volume_type, 'nbd');
  const uri = info.data.uri as string;
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
  assert.equal((await s.request('DELETE', `${V}/attachments/${attId}`, undefined, MV)).status, 200);
});

/** The base64 key of the cluster's admin keyring: what must never reach a host unasked. */
const adminKey = /^\s*key\s*=\s*(\S+)/m.exec(fs.readFileSync(ceph.keyringPath, 'utf8'))![1]!;

/** Asserts rbd connection info `data` has Cinder's keys (plus `keyring` when `withKeyring`) and its common values. */
function assertCinderRbdInfo(data: Record<string, unknown>, expected: Record<string, unknown>, withKeyring: boolean): void {
  // Cinder's RBD driver's keys and what its volume manager adds; nothing of Basalt's NBD export.
  assert.deepEqual(Object.keys(data).sort(), [
    'access_mode', 'auth_enabled', 'auth_username', 'cluster_name', 'discard', 'encrypted', 'hosts', ...(withKeyring ? ['keyring'] : []), 'name', 'ports',
    'qos_specs', 'secret_type', 'secret_uuid', 'volume_id',
  ]);
  // qos_specs: the type's front-end QoS specs, which Cinder's volume manager adds (none here).
  assert.deepEqual({ ...data, hosts: undefined, ports: undefined }, { hosts: undefined, ports: undefined, qos_specs: null, ...expected });
  const hosts = data.hosts as string[];
  const ports = data.ports as string[];
  assert.ok(hosts.length > 0 && hosts.length === ports.length && ports.every((p) => /^\d+$/.test(p)), JSON.stringify({ hosts, ports }));
}

test('by default rbd connection info holds no secret: the host opens the volume with its own keyring', async (t) => {
  // OSSN-0085: connection info is read by every user who attaches, so Basalt's own keyring
  // (rbd_keyring_conf, set here) stays with Basalt unless the operator opts in.
  const stateDir = tempStateDir(t);
  const database = await testDatabase(stateDir);
  const { s, pool } = await rbdServer(t, [], { stateDir, env: database.env });
  const vol = await created(s, { size: 1 });
  const { id: attId, info } = await attach(s, vol);
  assert.equal(info.driver_volume_type, 'rbd');
  const fsid = (await ceph.ceph('fsid')).trim();
  assertCinderRbdInfo(info.data, {
    name: `${pool}/volume-${vol}`, cluster_name: 'ceph', auth_enabled: true, auth_username: ceph.user,
    // No rbd_secret_uuid: the cluster's fsid, as Cinder defaults it.
    secret_type: 'ceph', secret_uuid: fsid, volume_id: vol, discard: false, access_mode: 'rw', encrypted: false,
  }, false);
  // The key is nowhere a user or the database can read it: not in the attachment's views, not in the service reports.
  for (const view of [
    (await s.request('GET', `${V}/attachments/${attId}`, undefined, MV)).body,
    (await s.request('GET', `${V}/attachments/detail`, undefined, MV)).body,
    await database.query('SELECT * FROM services'),
  ]) assert.ok(!JSON.stringify(view).includes(adminKey), 'the key of rbd_keyring_conf leaked');

  // What a hypervisor with librbd does with it: an rbd: URL of the pool/image, the user and the
  // monitors, and its own keyring for the user (here a copy of the cluster's) — no ceph.conf.
  const hostKeyring = `${process.env.TMPDIR ?? '/tmp'}/basalt-rbd-host-keyring-${vol}`;
  fs.copyFileSync(ceph.keyringPath, hostKeyring);
  t.after(() => fs.rmSync(hostKeyring, { force: true }));
  const url = rbdUrl(info.data as unknown as RbdConnectionData, { keyring: hostKeyring, conf: '/dev/null' });
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 1M 64k', url]);
  assert.doesNotMatch((await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x3c 1M 64k', url])).stdout, /verification failed/);
  // The connection info alone opens nothing: the same URL without a key of the host's own does
  // not connect (cephx has nothing to answer the monitor with; librados gives up at the timeout).
  const bare = rbdUrl(info.data as unknown as RbdConnectionData, { keyring: '/dev/null', conf: '/dev/null', client_mount_timeout: '3' });
  await assert.rejects(run('qemu-img', ['info', bare], { timeout: 60_000 }), (e: { stderr: string }) => /error connecting/.test(e.stderr));

  assert.equal((await s.request('DELETE', `${V}/attachments/${attId}`, undefined, MV)).status, 200);
});

test('with rbd_send_keyring_to_hosts rbd connection info carries the keyring, with which QEMU\'s librbd writes the volume', async (t) => {
  const secretUuid = '9a2b7c1e-4d3f-4e5a-8b6c-0d1e2f3a4b5c';
  const { s, pool } = await rbdServer(t, [`rbd_secret_uuid = ${secretUuid}`, 'report_discard_supported = true', 'rbd_send_keyring_to_hosts = true']);
  const vol = await created(s, { size: 1 });
  const { id: attId, info } = await attach(s, vol);
  assert.equal(info.driver_volume_type, 'rbd');
  const { data } = info;
  assertCinderRbdInfo(data, {
    name: `${pool}/volume-${vol}`, cluster_name: 'ceph', auth_enabled: true, auth_username: ceph.user,
    secret_type: 'ceph', secret_uuid: secretUuid, volume_id: vol, discard: true, keyring: fs.readFileSync(ceph.keyringPath, 'utf8'),
    access_mode: 'rw', encrypted: false,
  }, true);
  // The check the default's test makes finds the key here (where the operator accepted the risk).
  assert.ok(JSON.stringify((await s.request('GET', `${V}/attachments/${attId}`, undefined, MV)).body).includes(adminKey));

  // What a hypervisor does with it (as cinderlib's users do): the keyring of the connection info, no ceph.conf.
  const keyring = `${process.env.TMPDIR ?? '/tmp'}/basalt-rbd-keyring-${vol}`;
  fs.writeFileSync(keyring, data.keyring as string, { mode: 0o600 });
  t.after(() => fs.rmSync(keyring, { force: true }));
  const url = rbdUrl(data as unknown as RbdConnectionData, { keyring, conf: '/dev/null' });
  const imageInfo = JSON.parse((await run('qemu-img', ['info', '--output=json', url])).stdout) as { 'virtual-size': number };
  assert.equal(imageInfo['virtual-size'], 1024 ** 3);
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 3M 128k', url]);
  assert.doesNotMatch((await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 3M 128k', url])).stdout, /verification failed/);

  // Basalt's rbd driver reads back what QEMU wrote.
  const driver = new RbdDriver({
    poolName: 'ceph', cephPool: pool, user: ceph.user, confPath: ceph.confPath, keyringPath: ceph.keyringPath,
    flattenVolumeFromSnapshot: false, maxCloneDepth: 5, chunkSizeMiB: 4, connectTimeoutSeconds: 30,
  });
  await driver.init();
  t.after(() => driver.close());
  const h = await driver.openVolume({ id: vol, sizeGiB: 1 });
  const MiB = 1024 * 1024;
  const read = await h.read(3 * MiB - 4096, 128 * 1024 + 8192);
  await h.close();
  assert.ok(read.subarray(4096, 4096 + 128 * 1024).equals(Buffer.alloc(128 * 1024, 0x5a)), 'the pattern is in the image');
  assert.ok(read.subarray(0, 4096).equals(Buffer.alloc(4096)) && read.subarray(4096 + 128 * 1024).equals(Buffer.alloc(4096)), 'and nothing around it');

  assert.equal((await s.request('DELETE', `${V}/attachments/${attId}`, undefined, MV)).status, 200);
});

test('a pool at its quota: NBD writes answer ENOSPC and never hang, creates are refused by the scheduler, and all works again once the quota is lifted', { timeout: 300_000 }, async (t) => {
  const ENOSPC = 28;
  const [CMD_READ, CMD_WRITE, CMD_FLUSH] = [0, 1, 3];
  const MiB = 1024 * 1024;
  const { s, pool } = await rbdServer(t, ['rbd_connection = nbd']);
  const vol = await created(s, { size: 1 });
  const spare = await created(s, { size: 1 });
  const { id: attId, info: conn } = await attach(s, vol);
  const c = await openExport(conn.data.host as string, conn.data.port as number, conn.data.export_name as string);
  t.after(() => c.sock.destroy());
  /** One request, failing the test if it gets no answer within 30 s (a write paused by a full pool would hang for ever). */
  const request = (type: number, offset: number, length: number, payload?: Buffer): Promise<{ error: number; data?: Buffer }> => Promise.race([
    simpleRequest(c, type, BigInt(offset), length, payload),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`NBD command ${type} at ${offset} hung`)), 30_000).unref()),
  ]);
  const kept = randomBytes(4 * MiB);
  assert.equal((await request(CMD_WRITE, 0, kept.length, kept)).error, 0);
  assert.equal((await request(CMD_FLUSH, 0, 0)).error, 0);

  // Fill the pool up to a 32 MiB quota. The cluster notices a quota a few seconds after the
  // bytes pass it (the monitor's tick over the placement groups' stats): write until it does.
  await ceph.ceph('osd', 'pool', 'set-quota', pool, 'max_bytes', String(32 * MiB));
  const errors: number[] = [];
  const chunk = Buffer.alloc(4 * MiB, 0x6b);
  for (let i = 1, until = Date.now() + 120_000; Date.now() < until && !errors.includes(ENOSPC); i = i % 200 + 1) {
    for (const r of [await request(CMD_WRITE, i * chunk.length, chunk.length, chunk), await request(CMD_FLUSH, 0, 0)]) if (r.error) errors.push(r.error);
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(errors.includes(ENOSPC), `a write or flush found the pool full: ${errors.join(', ')}`);
  assert.deepEqual(errors.filter((e) => e !== ENOSPC), [], 'ENOSPC, never another error (QEMU pauses its guest on ENOSPC)');
  assert.equal((await request(CMD_READ, 0, 4096)).error, 0, 'the connection still serves reads');

  // The scheduler sees a full pool and refuses a create with a message naming the filter; nothing answers 5xx.
  await waitFor('the pool to report it is full', async () => {
    const pools = (await s.request('GET', `${V}/scheduler-stats/get_pools?detail=true`)).body.pools as Array<{ capabilities: { free_capacity_gb: number } }>;
    return pools[0]?.capabilities.free_capacity_gb === 0 ? true : undefined;
  });
  const refused = await s.request('POST', `${V}/volumes`, { volume: { size: 1, name: 'no-room' } });
  assert.equal(refused.status, 202);
  await waitForStatus(s, refused.body.volume.id, 'error');
  const msgs = await s.request('GET', `${V}/messages?resource_uuid=${refused.body.volume.id}`, undefined, { 'OpenStack-API-Version': 'volume 3.5' });
  assert.match(msgs.body.messages[0].user_message, /^schedule allocate volume: Could not find any available weighted backend\. Rejected: .*@ceph#ceph: CapacityFilter/);
  for (const path of [`${V}/volumes/${vol}`, `${V}/volumes/detail`, `${V}/attachments/${attId}`]) {
    assert.ok((await s.request('GET', path, undefined, MV)).status < 500, path);
  }
  // A removal needs room too (librbd moves the image to the pool's trash first, and answers
  // ENOENT when it cannot): the delete fails with the image kept, never a volume gone whose image stays.
  assert.equal((await s.request('DELETE', `${V}/volumes/${spare}`)).status, 202);
  await waitForStatus(s, spare, 'error_deleting');
  assert.ok((await ceph.rbd('ls', pool)).split('\n').includes(`volume-${spare}`), 'the image is still there, and Basalt knows it');

  // Lifted: writes and flushes land again, the data from before is intact, creates are placed
  // once the cluster has taken the pool's full flag off (the monitor's next tick).
  await ceph.ceph('osd', 'pool', 'set-quota', pool, 'max_bytes', '0');
  await waitFor('the pool\'s full flag to go', async () => {
    const pools = JSON.parse(await ceph.ceph('osd', 'pool', 'ls', 'detail', '-f', 'json')) as Array<{ pool_name: string; flags_names: string }>;
    return pools.find((p) => p.pool_name === pool)?.flags_names.includes('full') === false ? true : undefined;
  });
  await waitFor('writes to land again', async () => {
    const w = await request(CMD_WRITE, 8 * MiB, 4096, Buffer.alloc(4096, 0x11));
    return w.error === 0 && (await request(CMD_FLUSH, 0, 0)).error === 0 ? true : undefined;
  });
  assert.ok((await request(CMD_READ, 0, kept.length)).data!.equals(kept), 'what was flushed before the pool filled is intact');
  assert.ok((await request(CMD_READ, 8 * MiB, 4096)).data!.equals(Buffer.alloc(4096, 0x11)));
  await waitFor('the pool to report room', async () => {
    const pools = (await s.request('GET', `${V}/scheduler-stats/get_pools?detail=true`)).body.pools as Array<{ capabilities: { free_capacity_gb: number } }>;
    return (pools[0]?.capabilities.free_capacity_gb ?? 0) > 1 ? true : undefined;
  });
  await created(s, { size: 1 });
  // From error_deleting, as in Cinder, only a forced delete (an admin's).
  assert.equal((await s.request('POST', `${V}/volumes/${spare}/action`, { 'os-force_delete': {} })).status, 202);
  await waitFor('the spare volume gone', async () => (await s.request('GET', `${V}/volumes/${spare}`)).status === 404);
  assert.ok(!(await ceph.rbd('ls', pool)).split('\n').includes(`volume-${spare}`), 'and its image with it');
  c.sock.destroy();
  assert.equal((await s.request('DELETE', `${V}/attachments/${attId}`, undefined, MV)).status, 200);
});

test('an incremental backup of an RBD snapshot reads only the objects librbd\'s diff names, though the host wrote past Basalt through librbd', { timeout: 300_000 }, async (t) => {
  const MiB = 1024 * 1024;
  const lines: string[] = [];
  const { s, pool } = await rbdServer(t, [], { logLines: lines });
  const vol = await created(s, { size: 1 });
  // The host's librbd writes the image directly (rbd connection info, the default): Basalt's
  // export sees none of it, so only the driver's changed extents can make a backup incremental.
  const { id: attId, info: conn } = await attach(s, vol);
  assert.equal((await s.request('POST', `${V}/attachments/${attId}/action`, { 'os-complete': null }, MV)).status, 204);
  const hostKeyring = `${process.env.TMPDIR ?? '/tmp'}/basalt-rbd-backup-keyring-${vol}`;
  fs.copyFileSync(ceph.keyringPath, hostKeyring);
  t.after(() => fs.rmSync(hostKeyring, { force: true }));
  const url = rbdUrl(conn.data as unknown as RbdConnectionData, { keyring: hostKeyring, conf: '/dev/null' });
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 48M', url]);
  const bytesRead = (backupId: string): number => {
    for (const line of lines) {
      const e = JSON.parse(line) as { msg?: string; backup_id?: string; bytes_read?: number };
      if (e.msg === 'backup stored' && e.backup_id === backupId) return e.bytes_read!;
    }
    throw new Error(`no 'backup stored' line for ${backupId}`);
  };
  const snapshot = async (): Promise<string> => {
    const c = await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: vol, force: true } });
    assert.equal(c.status, 202, JSON.stringify(c.body));
    await waitFor('snapshot', async () => (await s.request('GET', `${V}/snapshots/${c.body.snapshot.id}`)).body.snapshot.status === 'available');
    return c.body.snapshot.id as string;
  };
  const backup = async (body: Record<string, unknown>): Promise<string> => {
    const r = await s.request('POST', `${V}/backups`, { backup: { volume_id: vol, force: true, ...body } });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    await waitFor(`backup ${r.body.backup.id}`, async () => {
      const b = (await s.request('GET', `${V}/backups/${r.body.backup.id}`)).body.backup;
      if (b.status === 'error') throw new Error(`backup failed: ${b.fail_reason}`);
      return b.status === 'available';
    }, 120_000);
    return r.body.backup.id as string;
  };
  const s1 = await snapshot();
  const full = await backup({ snapshot_id: s1 });
  assert.ok(bytesRead(full) >= 48 * MiB, `the full backup reads the data (${bytesRead(full)} bytes)`);
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 5M 4k', url]); // inside the 4 MiB object at 4 MiB
  const s2 = await snapshot();
  const inc = await backup({ snapshot_id: s2, incremental: true });
  const read = bytesRead(inc);
  assert.ok(read > 0 && read <= 4 * MiB, `the incremental backup read ${read} bytes: the one object that changed`);

  // It restores the snapshot byte for byte.
  const restored = await s.request('POST', `${V}/backups/${inc}/restore`, { restore: {} });
  assert.equal(restored.status, 202, JSON.stringify(restored.body));
  const to = restored.body.restore.volume_id as string;
  await waitForStatus(s, to, 'available', 120_000);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-rbd-restore-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  await ceph.rbd('export', `${pool}/volume-${vol}@snapshot-${s2}`, path.join(dir, 'snap'));
  await ceph.rbd('export', `${pool}/volume-${to}`, path.join(dir, 'restored'));
  assert.equal(await fileDigest(path.join(dir, 'restored'), 1024 ** 3), await fileDigest(path.join(dir, 'snap'), 1024 ** 3));
  assert.equal((await s.request('DELETE', `${V}/attachments/${attId}`, undefined, MV)).status, 200);
});

test('an image deleted behind Basalt\'s back: its volume turns error with a user message (attached: when detached), operations on it are refused, its export refuses, deleting it succeeds, nothing answers 5xx', { timeout: 300_000 }, async (t) => {
  const { s, pool } = await rbdServer(t, ['rbd_connection = nbd']);
  const [extended, snapped, cloned, attached, kept] = [await created(s, { size: 1 }), await created(s, { size: 1 }), await created(s, { size: 1 }), await created(s, { size: 1 }), await created(s, { size: 1 })];
  const { id: attachment, info: conn } = await attach(s, attached);
  assert.equal((await s.request('POST', `${V}/attachments/${attachment}/action`, { 'os-complete': null }, MV)).status, 204);
  for (const id of [extended, snapped, cloned, attached]) await ceph.rbd('rm', `${pool}/volume-${id}`);
  const messages = async (id: string): Promise<string[]> =>
    ((await s.request('GET', `${V}/messages?resource_uuid=${id}`, undefined, { 'OpenStack-API-Version': 'volume 3.5' })).body.messages as Array<{ user_message: string }>).map((m) => m.user_message);
  const LOST = 'check volume storage: The volume\'s data is no longer on the storage backend (it was removed outside Basalt); the volume can only be deleted.';

  // The volume service's listings find them gone: error, with the reason in a user message.
  for (const id of [extended, snapped, cloned]) {
    await waitForStatus(s, id, 'error', 120_000);
    assert.deepEqual(await messages(id), [LOST]);
  }
  await waitFor('the attached volume\'s message', async () => (await messages(attached)).length === 1, 120_000);
  assert.deepEqual(await messages(attached), [LOST]);
  assert.equal((await s.request('GET', `${V}/volumes/${attached}`)).body.volume.status, 'in-use', 'attached: it can still be detached');

  // Operations on them are refused with Cinder's 400, not attempted.
  assert.equal((await s.request('POST', `${V}/volumes/${extended}/action`, { 'os-extend': { new_size: 2 } })).status, 400);
  assert.equal((await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: snapped } })).status, 400);
  assert.equal((await s.request('POST', `${V}/volumes`, { volume: { size: 1, source_volid: cloned } })).status, 400);

  // Attached over NBD: the export has no image to serve and says so to the client.
  await assert.rejects(run('qemu-io', ['-f', 'raw', '-c', 'read 0 4k', conn.data.uri as string], { timeout: 60_000 }));
  for (const path of [`${V}/volumes/detail`, `${V}/snapshots/detail`, `${V}/attachments/detail`]) assert.ok((await s.request('GET', path, undefined, MV)).status < 500, path);

  // Detached, it turns error as well; the volume whose image is there never does.
  assert.equal((await s.request('DELETE', `${V}/attachments/${attachment}`, undefined, MV)).status, 200);
  await waitForStatus(s, attached, 'error', 120_000);
  assert.equal((await s.request('GET', `${V}/volumes/${kept}`)).body.volume.status, 'available');
  assert.deepEqual(await messages(kept), []);

  // They are deleted as gone (the idempotent delete finds nothing to remove).
  for (const id of [extended, snapped, cloned, attached]) {
    assert.equal((await s.request('DELETE', `${V}/volumes/${id}`)).status, 202);
    await waitFor(`volume ${id} gone`, async () => (await s.request('GET', `${V}/volumes/${id}`)).status === 404);
  }
});
