/**
 * Incremental backups from changed blocks (issue 15, part 3), on the real
 * server with qemu-io and nbdcopy over the NBD export: an incremental backup
 * reads only the blocks written since its parent (native threads, the event
 * loop and TLS alike), also across a clean restart; a backup that fails keeps
 * the blocks for the next; a restore onto the volume, a revert, a loop-device
 * attachment and a kill -9 of the server while the volume is attached make
 * the next incremental backup read everything; on a reflink pool, a backup of
 * a snapshot reads what the driver's extent maps say changed since its
 * parent's snapshot — and every restore is byte for byte the volume.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { fileDigest } from '../helpers/file-digest.ts';
import { connectExport, openExport, simpleRequest } from '../helpers/nbd-raw.ts';
import { kill9, spawnBasalt } from '../helpers/process.ts';
import { FAST_TIMINGS, PROJECT, request, startTestServer, tempStateDir, testDatabase, waitFor, waitForStatus } from '../helpers/server.ts';

const run = promisify(execFile);
const BIN = path.resolve(import.meta.dirname, '../../bin/basalt.js');
const V = `/v3/${PROJECT}`;
const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const MV = { 'OpenStack-API-Version': 'volume 3.54' };
const CONNECTOR = { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.test', mode: 'rw' };
/** What the volumes hold before their first backup, written to the file (no backup has a base yet). */
const DATA = 48 * MiB;

type Call = (method: string, p: string, body?: unknown, headers?: Record<string, string>) => Promise<{ status: number; body: any }>; // eslint-disable-line @typescript-eslint/no-explicit-any

function volumeFile(stateDir: string, id: string): string {
  return path.join(stateDir, 'volumes', 'file', `volume-${id}`);
}

/** A volume of 1 GiB holding {@link DATA} bytes of noise at its start. */
async function volumeWithData(call: Call, stateDir: string): Promise<string> {
  const r = await call('POST', `${V}/volumes`, { volume: { size: 1, name: 'tracked' } });
  const id = r.body.volume.id as string;
  await waitFor('volume available', async () => (await call('GET', `${V}/volumes/${id}`)).body.volume.status === 'available');
  const fh = await fs.promises.open(volumeFile(stateDir, id), 'r+');
  await fh.write(randomBytes(DATA), 0, DATA, 0);
  await fh.close();
  return id;
}

async function attach(call: Call, vol: string): Promise<{ id: string; uri: string; data: { host: string; port: number; export_name: string } }> {
  const a = await call('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, connector: CONNECTOR } }, MV);
  assert.equal(a.status, 200, JSON.stringify(a.body));
  assert.equal((await call('POST', `${V}/attachments/${a.body.attachment.id}/action`, { 'os-complete': null }, MV)).status, 204);
  return { id: a.body.attachment.id, uri: a.body.attachment.connection_info.data.uri, data: a.body.attachment.connection_info.data };
}

async function detach(call: Call, vol: string, attachmentId: string): Promise<void> {
  assert.equal((await call('DELETE', `${V}/attachments/${attachmentId}`, undefined, MV)).status, 200);
  await waitFor('volume available', async () => (await call('GET', `${V}/volumes/${vol}`)).body.volume.status === 'available');
}

/** Creates a backup and waits for its end; returns its row (status `available`, or `error` when `fails`). */
async function backup(call: Call, body: Record<string, unknown>, fails = false): Promise<Record<string, any>> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await call('POST', `${V}/backups`, { backup: body });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return waitFor(`backup ${r.body.backup.id}`, async () => {
    const b = (await call('GET', `${V}/backups/${r.body.backup.id}`)).body.backup;
    if (b.status === 'error' && !fails) throw new Error(`backup failed: ${b.fail_reason}`);
    return b.status === (fails ? 'error' : 'available') && b;
  }, 90_000);
}

/** Restores a backup to a new volume; returns the digest of its first GiB. */
async function restoredDigest(call: Call, stateDir: string, backupId: string): Promise<string> {
  const r = await call('POST', `${V}/backups/${backupId}/restore`, { restore: {} });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const vol = r.body.restore.volume_id as string;
  await waitFor('restored', async () => (await call('GET', `${V}/volumes/${vol}`)).body.volume.status === 'available', 90_000);
  return fileDigest(volumeFile(stateDir, vol), GiB);
}

/** Bytes a backup read from its volume, from its `backup stored` log line. */
function bytesRead(lines: readonly string[], backupId: string): number {
  for (const line of lines) {
    const e = JSON.parse(line) as { msg?: string; backup_id?: string; bytes_read?: number };
    if (e.msg === 'backup stored' && e.backup_id === backupId) return e.bytes_read!;
  }
  throw new Error(`no 'backup stored' line for ${backupId}`);
}

for (const plane of ['native', 'event-loop']) {
  test(`${plane} plane: an incremental backup reads only the blocks written over NBD since its parent, even after a failed one`, { timeout: 180_000 }, async (t) => {
    const lines: string[] = [];
    const s = await startTestServer(t, { logLines: lines, env: { BASALT_NBD_DATA_PLANE: plane } });
    const call: Call = (m, p, b, h) => s.request(m, p, b, h);
    const vol = await volumeWithData(call, s.stateDir);
    const full = await backup(call, { volume_id: vol });
    assert.ok(bytesRead(lines, full.id) >= DATA, 'the full backup reads all the data');

    // Written over NBD while attached: a write, zeroes, a discard; then an incremental backup of the in-use volume.
    const a = await attach(call, vol);
    await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 5M 4k', '-c', 'write -z 40M 64k', '-c', 'discard 44M 64k', '-c', 'write -P 0x22 700M 8k', a.uri]);
    const inc = await backup(call, { volume_id: vol, incremental: true, force: true });
    const read = bytesRead(lines, inc.id);
    assert.ok(read > 0 && read <= 4 * MiB, `the incremental backup read ${read} bytes: the changed blocks' chunks only`);
    await detach(call, vol, a.id);
    assert.equal(await restoredDigest(call, s.stateDir, inc.id), await fileDigest(volumeFile(s.stateDir, vol), GiB), 'the incremental backup restores the volume');

    // A backup that fails after its point in time (the target refuses its objects) gives its blocks back.
    const b = await attach(call, vol);
    await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 300M 4k', b.uri]);
    await detach(call, vol, b.id);
    const store = path.join(s.stateDir, 'backups', 'volumes', vol);
    const aside = fs.readdirSync(store).filter((d) => d !== 'manifests');
    for (const d of aside) {
      fs.renameSync(path.join(store, d), path.join(store, `${d}.aside`));
      fs.writeFileSync(path.join(store, d), 'not a folder');
    }
    const failed = await backup(call, { volume_id: vol, incremental: true }, true);
    for (const d of aside) {
      fs.rmSync(path.join(store, d));
      fs.renameSync(path.join(store, `${d}.aside`), path.join(store, d));
    }
    // As in Cinder, the latest backup is the parent: the failed one goes first.
    assert.equal((await call('DELETE', `${V}/backups/${failed.id}`)).status, 202);
    await waitFor('failed backup deleted', async () => (await call('GET', `${V}/backups/${failed.id}`)).status === 404);
    const retry = await backup(call, { volume_id: vol, incremental: true });
    assert.equal(retry.status, 'available', `after the failure (${failed.fail_reason})`);
    assert.ok(bytesRead(lines, retry.id) <= 4 * MiB, 'the retry still knows what changed');
    assert.equal(await restoredDigest(call, s.stateDir, retry.id), await fileDigest(volumeFile(s.stateDir, vol), GiB), 'and holds the write the failed backup saw');

    // A restore onto the volume writes past the export: the next incremental backup reads everything.
    const onto = await call('POST', `${V}/backups/${full.id}/restore`, { restore: { volume_id: vol } });
    assert.equal(onto.status, 202, JSON.stringify(onto.body));
    await waitForStatus(s, vol, 'available');
    const afterRestore = await backup(call, { volume_id: vol, incremental: true });
    assert.ok(bytesRead(lines, afterRestore.id) >= DATA, 'after a restore onto the volume, everything is read');
    assert.equal(await restoredDigest(call, s.stateDir, afterRestore.id), await fileDigest(volumeFile(s.stateDir, vol), GiB));
  });
}

test('kill -9 of the server while a volume is attached and written: the next incremental backup reads everything, and restores it', { timeout: 180_000 }, async (t) => {
  const stateDir = tempStateDir(t);
  const database = await testDatabase(stateDir);
  const env = { ...FAST_TIMINGS, BASALT_STATE_DIR: stateDir, BASALT_PORT: '0', BASALT_LOG_LEVEL: 'info', ...database.env };
  const first = await spawnBasalt(env);
  t.after(() => { first.child.kill('SIGKILL'); });
  const call1: Call = (m, p, b, h) => request(first.url!, m, p, b, h);
  const vol = await volumeWithData(call1, stateDir);
  await backup(call1, { volume_id: vol });
  const a = await attach(call1, vol);
  // A host that stays connected: the volume still has a writer when the server dies. (qemu-io alone
  // disconnects after its write, and a clean end that wins the race against the kill saves the bits.)
  const host = await connectExport(a.data.host, a.data.port, a.data.export_name);
  t.after(() => { host.destroy(); });
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x44 10M 4k', a.uri]);
  await kill9(first.child);

  const second = await spawnBasalt(env);
  t.after(() => { second.child.kill('SIGKILL'); });
  const lines: string[] = [];
  readline.createInterface({ input: second.child.stdout! }).on('line', (l) => { if (l.startsWith('{')) lines.push(l); });
  const call2: Call = (m, p, b, h) => request(second.url!, m, p, b, h);
  await detach(call2, vol, a.id);
  const inc = await backup(call2, { volume_id: vol, incremental: true });
  assert.ok(bytesRead(lines, inc.id) >= DATA, 'the tracker may have missed acknowledged writes: everything is read');
  const r = await call2('POST', `${V}/backups/${inc.id}/restore`, { restore: {} });
  const restored = r.body.restore.volume_id as string;
  await waitFor('restored', async () => (await call2('GET', `${V}/volumes/${restored}`)).body.volume.status === 'available', 90_000);
  assert.equal(await fileDigest(volumeFile(stateDir, restored), GiB), await fileDigest(volumeFile(stateDir, vol), GiB));
});

test('on a reflink pool, an incremental backup of a snapshot reads only what the driver says changed since its parent\'s snapshot', { timeout: 180_000 }, async (t) => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-cbt-xfs-'));
  const image = path.join(base, 'xfs.img');
  const mnt = path.join(base, 'mnt');
  fs.mkdirSync(mnt);
  fs.writeFileSync(image, '');
  fs.truncateSync(image, 4 * GiB);
  execFileSync('mkfs.xfs', ['-q', '-m', 'reflink=1', image]);
  execFileSync('mount', ['-o', 'loop', image, mnt]);
  const lines: string[] = [];
  const s = await startTestServer(t, { logLines: lines, ini: `[backend_defaults]\nfile_volume_dir = ${mnt}/vols\n` });
  // Registered after the server's own clean-up, so it runs once the server has stopped.
  t.after(() => {
    try { execFileSync('umount', ['-l', mnt]); } finally { fs.rmSync(base, { recursive: true, force: true }); }
  });
  const call: Call = (m, p, b, h) => s.request(m, p, b, h);
  const r = await call('POST', `${V}/volumes`, { volume: { size: 1, name: 'on-xfs' } });
  const vol = r.body.volume.id as string;
  await waitForStatus(s, vol, 'available');
  const file = path.join(mnt, 'vols', `volume-${vol}`);
  const snapshot = async (): Promise<string> => {
    const c = await call('POST', `${V}/snapshots`, { snapshot: { volume_id: vol } });
    assert.equal(c.status, 202, JSON.stringify(c.body));
    await waitFor('snapshot', async () => (await call('GET', `${V}/snapshots/${c.body.snapshot.id}`)).body.snapshot.status === 'available');
    return c.body.snapshot.id as string;
  };
  const fh = await fs.promises.open(file, 'r+');
  await fh.write(randomBytes(DATA), 0, DATA, 0);
  await fh.datasync();
  const s1 = await snapshot();
  const full = await backup(call, { volume_id: vol, snapshot_id: s1 });
  assert.ok(bytesRead(lines, full.id) >= DATA);
  await fh.write(randomBytes(4096), 0, 4096, 5 * MiB); // the driver compares the files: it sees even a write past the export
  await fh.close();
  const s2 = await snapshot();
  const inc = await backup(call, { volume_id: vol, snapshot_id: s2, incremental: true });
  const read = bytesRead(lines, inc.id);
  assert.ok(read > 0 && read <= 4 * MiB, `the incremental backup of the snapshot read ${read} bytes`);
  const restored = await call('POST', `${V}/backups/${inc.id}/restore`, { restore: {} });
  const to = restored.body.restore.volume_id as string;
  await waitForStatus(s, to, 'available');
  assert.equal(await fileDigest(path.join(mnt, 'vols', `volume-${to}`), GiB), await fileDigest(path.join(mnt, 'vols', `snapshot-${s2}`), GiB), 'it restores the snapshot');
});

test('a loop-device attachment writes past the export: once detached, the next incremental backup reads everything', { timeout: 180_000 }, async (t) => {
  const lines: string[] = [];
  const s = await startTestServer(t, { logLines: lines });
  const call: Call = (m, p, b, h) => s.request(m, p, b, h);
  const vol = await volumeWithData(call, s.stateDir);
  await backup(call, { volume_id: vol });
  const cli = (...args: string[]) => run(process.execPath, [BIN, ...args, '--url', s.url, '--project', PROJECT]);
  const device = (await cli('attach', vol)).stdout.trim();
  assert.match(device, /^\/dev\/loop\d+$/);
  t.after(() => run('losetup', ['-d', device]).catch(() => undefined));
  const pattern = path.join(s.stateDir, 'pattern');
  fs.writeFileSync(pattern, Buffer.alloc(4096, 0x61));
  await run('dd', [`if=${pattern}`, `of=${device}`, 'bs=4096', 'seek=2560', 'conv=fsync', 'status=none']);
  assert.match((await cli('detach', vol)).stdout, /detached/);
  const inc = await backup(call, { volume_id: vol, incremental: true });
  assert.ok(bytesRead(lines, inc.id) >= DATA, 'the loop device\'s writes were not recorded: everything is read');
  assert.equal(await restoredDigest(call, s.stateDir, inc.id), await fileDigest(volumeFile(s.stateDir, vol), GiB));
});

test('a revert to a snapshot writes past the export: the next incremental backup reads everything', { timeout: 180_000 }, async (t) => {
  const lines: string[] = [];
  const s = await startTestServer(t, { logLines: lines });
  const call: Call = (m, p, b, h) => s.request(m, p, b, h);
  const vol = await volumeWithData(call, s.stateDir);
  const snap = await call('POST', `${V}/snapshots`, { snapshot: { volume_id: vol } });
  await waitFor('snapshot', async () => (await call('GET', `${V}/snapshots/${snap.body.snapshot.id}`)).body.snapshot.status === 'available');
  const a = await attach(call, vol);
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x55 2M 1M', a.uri]);
  await detach(call, vol, a.id);
  await backup(call, { volume_id: vol });
  assert.equal((await call('POST', `${V}/volumes/${vol}/action`, { revert: { snapshot_id: snap.body.snapshot.id } }, { 'OpenStack-API-Version': 'volume 3.40' })).status, 202);
  await waitForStatus(s, vol, 'available');
  const inc = await backup(call, { volume_id: vol, incremental: true });
  assert.ok(bytesRead(lines, inc.id) >= DATA, 'after the revert, everything is read');
  assert.equal(await restoredDigest(call, s.stateDir, inc.id), await fileDigest(volumeFile(s.stateDir, vol), GiB), 'and the backup holds the reverted data');
});

test('the changed blocks survive a clean restart with the volume attached: the next incremental backup still reads only them', { timeout: 180_000 }, async (t) => {
  const stateDir = tempStateDir(t);
  const database = await testDatabase(stateDir);
  const first = await startTestServer(t, { stateDir, env: database.env });
  const call1: Call = (m, p, b, h) => first.request(m, p, b, h);
  const vol = await volumeWithData(call1, stateDir);
  await backup(call1, { volume_id: vol });
  const a = await attach(call1, vol);
  // A client still connected when the server stops.
  const info = (await call1('GET', `${V}/attachments/${a.id}`, undefined, MV)).body.attachment.connection_info.data;
  const c = await openExport(info.host, info.port, info.export_name);
  t.after(() => c.sock.destroy());
  assert.equal((await simpleRequest(c, 1 /* WRITE */, BigInt(20 * MiB), 4096, Buffer.alloc(4096, 0x66))).error, 0);
  await first.close(); // the connection is dropped, its handle closed, the bits saved clean

  const lines: string[] = [];
  const second = await startTestServer(t, { stateDir, env: database.env, logLines: lines });
  const call2: Call = (m, p, b, h) => second.request(m, p, b, h);
  await detach(call2, vol, a.id);
  const inc = await backup(call2, { volume_id: vol, incremental: true });
  const read = bytesRead(lines, inc.id);
  assert.ok(read > 0 && read <= 4 * MiB, `after a clean restart the incremental backup read ${read} bytes`);
  assert.equal(await restoredDigest(call2, stateDir, inc.id), await fileDigest(volumeFile(stateDir, vol), GiB));
});

test('TLS plane: an incremental backup reads only the blocks nbdcopy wrote over TLS-PSK since its parent', { timeout: 180_000 }, async (t) => {
  const lines: string[] = [];
  const s = await startTestServer(t, { logLines: lines, env: { BASALT_NBD_REQUIRE_TLS: 'true' } });
  const call: Call = (m, p, b, h) => s.request(m, p, b, h);
  const vol = await volumeWithData(call, s.stateDir);
  await backup(call, { volume_id: vol });
  const a = await call('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, connector: CONNECTOR } }, MV);
  const data = a.body.attachment.connection_info.data;
  assert.equal(data.tls.required, true);
  const pskFile = path.join(s.stateDir, 'client.psk');
  fs.writeFileSync(pskFile, `${data.tls.psk_identity}:${data.tls.psk_key}\n`);
  const source = path.join(s.stateDir, 'source.raw');
  fs.writeFileSync(source, randomBytes(64 * 1024));
  await run('nbdcopy', [source, `nbds://${data.tls.psk_identity}@${data.host}:${data.port}/${data.export_name}?tls-psk-file=${pskFile}`]);
  await detach(call, vol, a.body.attachment.id);
  const inc = await backup(call, { volume_id: vol, incremental: true });
  const read = bytesRead(lines, inc.id);
  assert.ok(read > 0 && read <= 4 * MiB, `the incremental backup read ${read} bytes`);
  assert.equal(await restoredDigest(call, s.stateDir, inc.id), await fileDigest(volumeFile(s.stateDir, vol), GiB));
});
