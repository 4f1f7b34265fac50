/**
 * Incremental backups from changed blocks (issue 15, part 3), on the real
 * server with qemu-io over the NBD export: an incremental backup reads only
 * the blocks written since its parent (native threads and the event loop); a
 * backup that fails keeps the blocks for the next; a restore onto the volume
 * and a kill -9 of the server while the volume is attached make the next
 * incremental backup read everything; on a reflink pool, a backup of a
 * snapshot reads what the driver's extent maps say changed since its
 * parent's snapshot — and every restore is byte for byte the volume. The
 * other write paths (loop device, revert, restart, TLS) are in
 * changed-blocks-paths.test.ts: one file took more than the runner's 5
 * minutes per file on a busy machine.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { test } from 'node:test';
import { fileDigest } from '../helpers/file-digest.ts';
import { connectExport } from '../helpers/nbd-raw.ts';
import { kill9, spawnBasalt } from '../helpers/process.ts';
import { FAST_TIMINGS, request, startTestServer, tempStateDir, testDatabase, waitFor, waitForStatus } from '../helpers/server.ts';
import { type Call, DATA, GiB, MiB, V, attach, backup, bytesRead, detach, restoredDigest, run, volumeFile, volumeWithData } from '../helpers/changed-blocks.ts';

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
