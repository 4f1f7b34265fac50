/** Cinder's backup API on the posix backup target: create (full, incremental, from a snapshot, of an in-use volume), restore, delete, admin actions, quotas. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { fileDigest } from '../helpers/file-digest.ts';
import { writeOverNbd } from '../helpers/nbd-write.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const run = promisify(execFile);
const V = `/v3/${PROJECT}`;
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const MV = (v: string) => ({ 'OpenStack-API-Version': `volume ${v}` });

function file(s: TestServer, id: string): string {
  return path.join(s.stateDir, 'volumes', 'file', `volume-${id}`);
}

function write(s: TestServer, id: string, offset: number, data: Buffer): void {
  const fd = fs.openSync(file(s, id), 'r+');
  fs.writeSync(fd, data, 0, data.length, offset);
  fs.closeSync(fd);
}

/** SHA-256 of the first `bytes` of a volume's file. */
function digest(s: TestServer, id: string, bytes = GiB): Promise<string> {
  return fileDigest(file(s, id), bytes);
}

/** Random bytes: they do not compress, so a chunk's stored size is its size. */
function noise(n: number, seed: number): Buffer {
  const out = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i += 4) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out.writeUInt32LE(x, i);
  }
  return out;
}

async function volume(s: TestServer, size = 1, extra: Record<string, unknown> = {}): Promise<string> {
  const r = await s.request('POST', `${V}/volumes`, { volume: { size, ...extra } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await waitForStatus(s, r.body.volume.id, 'available');
  return r.body.volume.id;
}

async function backupStatus(s: TestServer, id: string, status: string): Promise<Record<string, any>> { // eslint-disable-line @typescript-eslint/no-explicit-any
  return waitFor(`backup ${id} ${status}`, async () => {
    const b = (await s.request('GET', `${V}/backups/${id}`)).body.backup;
    if (b.status === 'error' && status !== 'error') throw new Error(`backup ${id} failed: ${b.fail_reason}`);
    return b.status === status && b;
  });
}

async function backup(s: TestServer, body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<Record<string, any>> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await s.request('POST', `${V}/backups`, { backup: body }, headers);
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return backupStatus(s, r.body.backup.id, 'available');
}

async function gone(s: TestServer, id: string): Promise<void> {
  await waitFor(`backup ${id} gone`, async () => (await s.request('GET', `${V}/backups/${id}`)).status === 404);
}

test('a full backup, an incremental one that stores only the changed chunks, and restores byte for byte', async (t) => {
  const s = await startTestServer(t);
  const vol = await volume(s, 1, { metadata: { origin: 'test' } });
  write(s, vol, 0, noise(4 * MiB, 1));
  write(s, vol, 300 * MiB, noise(3 * MiB, 2));
  write(s, vol, GiB - 4096, Buffer.from('the very end'));
  const before = await digest(s, vol);

  const created = await s.request('POST', `${V}/backups`, { backup: { volume_id: vol, name: 'full', description: 'first', container: 'c1' } });
  assert.equal(created.status, 202);
  assert.deepEqual(Object.keys(created.body.backup).sort(), ['id', 'links', 'name'], 'create answers the summary view');
  assert.equal((await s.request('GET', `${V}/volumes/${vol}`)).body.volume.status, 'backing-up');
  const full = await backupStatus(s, created.body.backup.id, 'available');
  await waitForStatus(s, vol, 'available');
  assert.equal(full.size, 1);
  assert.equal(full.container, 'c1');
  assert.equal(full.is_incremental, false);
  assert.equal(full.snapshot_id, null);
  assert.equal(full.object_count, 3, 'one pack (7 MiB of 16 KiB blocks), its index object and the manifest');
  assert.ok(full.data_timestamp);

  // Change one chunk, through the NBD export (which records it; a write behind Basalt's back, to the
  // file itself, is one no incremental backup can know of): the incremental backup stores it and its manifest only.
  await writeOverNbd(s, vol, 'write -P 0x63 314572810 7');
  const changed = await digest(s, vol);
  const inc = await backup(s, { volume_id: vol, incremental: true, name: 'inc' });
  assert.equal(inc.is_incremental, true);
  assert.equal(inc.object_count, 3, 'the changed block\'s pack, its index object and the manifest');
  const fullNow = (await s.request('GET', `${V}/backups/${full.id}`)).body.backup;
  assert.equal(fullNow.has_dependent_backups, true);
  const stored = fs.readdirSync(path.join(s.stateDir, 'backups', 'volumes', vol, 'packs'), { recursive: true }).filter((f) => /[0-9a-f]{64}$/.test(String(f)));
  assert.equal(stored.length, 2, 'the incremental backup stored one pack beside the full\'s');

  // Deleting the parent is refused while the incremental backup needs it.
  const refused = await s.request('DELETE', `${V}/backups/${full.id}`);
  assert.equal(refused.status, 400);
  assert.match(refused.body.badRequest.message, /Incremental backups exist for this backup/);

  // Restore the full backup to a new volume, the incremental one onto an existing larger volume.
  const r1 = await s.request('POST', `${V}/backups/${full.id}/restore`, { restore: { name: 'restored' } });
  assert.equal(r1.status, 202, JSON.stringify(r1.body));
  assert.deepEqual(Object.keys(r1.body.restore).sort(), ['backup_id', 'volume_id', 'volume_name']);
  assert.equal(r1.body.restore.volume_name, 'restored');
  await waitForStatus(s, r1.body.restore.volume_id, 'available');
  await backupStatus(s, full.id, 'available');
  assert.equal(await digest(s, r1.body.restore.volume_id), before, 'the full backup restores the data as it was');
  assert.deepEqual((await s.request('GET', `${V}/volumes/${r1.body.restore.volume_id}`)).body.volume.metadata, { origin: 'test' }, 'with the volume\'s metadata');

  const big = await volume(s, 2, { name: 'big' });
  write(s, big, 100 * MiB, noise(MiB, 3)); // old data where the backup has zeros: the restore clears it
  const r2 = await s.request('POST', `${V}/backups/${inc.id}/restore`, { restore: { volume_id: big } });
  assert.equal(r2.status, 202);
  assert.equal((await s.request('GET', `${V}/volumes/${big}`)).body.volume.status, 'restoring-backup');
  await waitForStatus(s, big, 'available');
  assert.equal(await digest(s, big), changed, 'the incremental backup restores the data as it was, onto a volume that held other data');

  // Delete the incremental one, then the full one: every pack goes.
  assert.equal((await s.request('DELETE', `${V}/backups/${inc.id}`)).status, 202);
  await gone(s, inc.id);
  assert.equal((await s.request('DELETE', `${V}/backups/${full.id}`)).status, 202);
  await gone(s, full.id);
  const left = fs.readdirSync(path.join(s.stateDir, 'backups', 'volumes', vol), { recursive: true }).filter((f) => /[0-9a-f]{64}$|\.(json|bin)$/.test(String(f)));
  assert.deepEqual(left, []);
  const usage = (await s.request('GET', `${V}/os-quota-sets/${PROJECT}?usage=True`)).body.quota_set;
  assert.deepEqual([usage.backups.in_use, usage.backup_gigabytes.in_use], [0, 0]);
});

test('show, lists, update, metadata and the microversioned keys', async (t) => {
  const s = await startTestServer(t);
  const vol = await volume(s);
  const b = await backup(s, { volume_id: vol, name: 'one', metadata: { k: 'v' } }, MV('3.43'));

  const base = (await s.request('GET', `${V}/backups/${b.id}`)).body.backup;
  assert.equal(base.metadata, undefined, 'metadata from 3.43');
  assert.equal(base['os-backup-project-attr:project_id'], undefined, 'project from 3.18');
  const v356 = (await s.request('GET', `${V}/backups/${b.id}`, undefined, MV('3.56'))).body.backup;
  assert.deepEqual(v356.metadata, { k: 'v' });
  assert.equal(v356['os-backup-project-attr:project_id'], PROJECT);
  assert.equal(v356.user_id, 'admin');
  const member = { 'X-Auth-Token': `member:${PROJECT}`, ...MV('3.56') };
  const asMember = (await s.request('GET', `${V}/backups/${b.id}`, undefined, member)).body.backup;
  assert.equal(asMember['os-backup-project-attr:project_id'], undefined, 'project and user for admins only');
  assert.equal(asMember.user_id, undefined);

  const list = (await s.request('GET', `${V}/backups`)).body.backups;
  assert.deepEqual(list.map((x: { id: string }) => x.id), [b.id]);
  assert.deepEqual(Object.keys(list[0]).sort(), ['id', 'links', 'name']);
  const detail = (await s.request('GET', `${V}/backups/detail?volume_id=${vol}&with_count=true`, undefined, MV('3.45'), {
    unchecked: "tempest's backup list schema puts count (3.45) inside each backup; Cinder answers it beside the list, as Basalt does",
  })).body;
  assert.equal(detail.count, 1);
  assert.equal(detail.backups[0].status, 'available');
  assert.equal((await s.request('GET', `${V}/backups/detail?name=nope`)).body.backups.length, 0);
  const OTHER = 'fedcba9876543210fedcba9876543210';
  const other = { 'X-Auth-Token': `member:${OTHER}` };
  assert.equal((await s.request('GET', `/v3/${OTHER}/backups`, undefined, other)).body.backups.length, 0, 'another project sees none');
  assert.equal((await s.request('GET', `/v3/${OTHER}/backups/${b.id}`, undefined, other)).status, 404);

  assert.equal((await s.request('PUT', `${V}/backups/${b.id}`, { backup: { name: 'x' } }, MV('3.8'))).status, 404, 'update from 3.9');
  const u = await s.request('PUT', `${V}/backups/${b.id}`, { backup: { name: 'renamed', description: 'd' } }, MV('3.9'));
  assert.equal(u.status, 200);
  assert.deepEqual(Object.keys(u.body.backup).sort(), ['id', 'links', 'name']);
  assert.equal(u.body.backup.name, 'renamed');
  assert.equal((await s.request('PUT', `${V}/backups/${b.id}`, { backup: { metadata: { a: 'b' } } }, MV('3.9'))).status, 400, 'metadata from 3.43');
  assert.equal((await s.request('PUT', `${V}/backups/${b.id}`, { backup: { metadata: { a: 'b' } } }, MV('3.43'))).status, 200);
  const shown = (await s.request('GET', `${V}/backups/${b.id}`, undefined, MV('3.43'))).body.backup;
  assert.deepEqual([shown.name, shown.description, shown.metadata], ['renamed', 'd', { a: 'b' }]);

  // Export and import of the record (admin): the imported backup names the same manifest, and restores.
  assert.equal((await s.request('GET', `${V}/backups/${b.id}/export_record`, undefined, member)).status, 403);
  const record = (await s.request('GET', `${V}/backups/${b.id}/export_record`)).body['backup-record'];
  assert.match(record.backup_service, /^cinder\.backup\.drivers\./);
  const copyId = '11111111-2222-4333-8444-555555555555';
  const url = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(record.backup_url, 'base64').toString()), id: copyId })).toString('base64');
  assert.equal((await s.request('POST', `${V}/backups/import_record`, { 'backup-record': { ...record, backup_url: 'bm9wZQ==' } })).status, 400);
  assert.equal((await s.request('POST', `${V}/backups/import_record`, { 'backup-record': record })).status, 400, 'the id exists');
  const imported = await s.request('POST', `${V}/backups/import_record`, { 'backup-record': { ...record, backup_url: url } });
  assert.equal(imported.status, 201, JSON.stringify(imported.body));
  assert.equal(imported.body.backup.id, copyId);
  await backupStatus(s, copyId, 'available');
  assert.equal((await s.request('DELETE', `${V}/backups/${b.id}`)).status, 202);
  await gone(s, b.id);
  const r = await s.request('POST', `${V}/backups/${copyId}/restore`, { restore: {} });
  assert.equal(r.status, 202);
  await waitForStatus(s, r.body.restore.volume_id, 'available');
  await backupStatus(s, copyId, 'available');
  assert.equal((await s.request('DELETE', `${V}/backups/${copyId}`)).status, 202);
  await gone(s, copyId);
  assert.deepEqual(fs.readdirSync(path.join(s.stateDir, 'backups', 'volumes', vol), { recursive: true }).filter((f) => /\.(json|bin)$/.test(String(f))), [], 'the last record takes the manifest with it');
});

test('bad input, unknown ids, status refusals and quotas', async (t) => {
  const s = await startTestServer(t);
  const vol = await volume(s);
  const post = (body: unknown, h: Record<string, string> = {}) => s.request('POST', `${V}/backups`, body, h);
  for (const body of [{}, { backup: {} }, { backup: { volume_id: 'nope' } }, { backup: { volume_id: vol, incremental: 'maybe' } }, { backup: { volume_id: vol, extra: 1 } }, { backup: { volume_id: vol, metadata: { a: 'b' } } }]) {
    const r = await post(body);
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.equal(r.body.badRequest.code, 400);
  }
  assert.equal((await post({ backup: { volume_id: '00000000-0000-0000-0000-000000000000' } })).status, 404);
  assert.equal((await post({ backup: { volume_id: vol, snapshot_id: '00000000-0000-0000-0000-000000000000' } })).status, 404);
  const noParent = await post({ backup: { volume_id: vol, incremental: true } });
  assert.equal(noParent.status, 400);
  assert.match(noParent.body.badRequest.message, /No backups available to do an incremental backup/);
  assert.equal((await s.request('GET', `${V}/backups/00000000-0000-0000-0000-000000000000`)).status, 404);
  assert.equal((await s.request('DELETE', `${V}/backups/00000000-0000-0000-0000-000000000000`)).status, 404);
  assert.equal((await s.request('POST', `${V}/backups/00000000-0000-0000-0000-000000000000/restore`, { restore: {} })).status, 404);

  // An in-use volume needs force.
  assert.equal((await s.request('POST', `${V}/volumes/${vol}/action`, { 'os-reset_status': { status: 'in-use' } })).status, 202);
  const inUse = await post({ backup: { volume_id: vol } });
  assert.equal(inUse.status, 400);
  assert.match(inUse.body.badRequest.message, /in-use volume must use the force flag/);
  assert.equal((await s.request('POST', `${V}/volumes/${vol}/action`, { 'os-reset_status': { status: 'available' } })).status, 202);

  const b = await backup(s, { volume_id: vol });
  // Restores onto a volume too small or not available are refused.
  const big = await volume(s, 2);
  const b2 = await backup(s, { volume_id: big });
  const small = await s.request('POST', `${V}/backups/${b2.id}/restore`, { restore: { volume_id: vol } });
  assert.equal(small.status, 400);
  assert.match(small.body.badRequest.message, /too small to restore backup of size 2/);
  assert.equal((await s.request('POST', `${V}/volumes/${vol}/action`, { 'os-reset_status': { status: 'in-use' } })).status, 202);
  const busy = await s.request('POST', `${V}/backups/${b.id}/restore`, { restore: { volume_id: vol } });
  assert.equal(busy.status, 400);
  assert.match(busy.body.badRequest.message, /must be available/);
  assert.equal((await s.request('POST', `${V}/volumes/${vol}/action`, { 'os-reset_status': { status: 'available' } })).status, 202);
  assert.equal((await s.request('POST', `${V}/backups/${b.id}/restore`, { restore: { volume_id: 'nope' } })).status, 400);
  assert.equal((await s.request('POST', `${V}/backups/${b.id}/action`, { 'os-nothing': null })).status, 400);
  assert.equal((await s.request('POST', `${V}/backups/${b.id}/action`, { 'os-reset_status': { status: 'creating' } })).status, 400);

  // Quotas: backups and backup_gigabytes.
  assert.equal((await s.request('PUT', `${V}/os-quota-sets/${PROJECT}`, { quota_set: { backups: 2 } })).status, 200);
  const over = await post({ backup: { volume_id: vol } });
  assert.equal(over.status, 413, JSON.stringify(over.body));
  assert.equal(over.body.overLimit.code, 413);
  assert.equal((await s.request('PUT', `${V}/os-quota-sets/${PROJECT}`, { quota_set: { backups: 10, backup_gigabytes: 3 } })).status, 200);
  assert.equal((await post({ backup: { volume_id: vol } })).status, 413, 'three GiB of backups are taken');
  const usage = (await s.request('GET', `${V}/os-quota-sets/${PROJECT}?usage=True`)).body.quota_set;
  assert.deepEqual([usage.backups.in_use, usage.backup_gigabytes.in_use], [2, 3]);

  // A member may not use the admin actions.
  const member = { 'X-Auth-Token': `member:${PROJECT}` };
  assert.equal((await s.request('POST', `${V}/backups/${b.id}/action`, { 'os-reset_status': { status: 'error' } }, member)).status, 403);
  assert.equal((await s.request('POST', `${V}/backups/${b.id}/action`, { 'os-force_delete': {} }, member)).status, 403);
});

test('reset status, force delete, a backup of a snapshot and of an in-use volume written over NBD', async (t) => {
  const s = await startTestServer(t);
  const vol = await volume(s);
  write(s, vol, 0, noise(2 * MiB, 7));
  const atSnapshot = await digest(s, vol);
  const snap = await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: vol } });
  await waitFor('snapshot', async () => (await s.request('GET', `${V}/snapshots/${snap.body.snapshot.id}`)).body.snapshot.status === 'available');
  write(s, vol, 0, noise(MiB, 8));

  // From a snapshot: the snapshot's data, not the volume's.
  const fromSnap = await backup(s, { volume_id: vol, snapshot_id: snap.body.snapshot.id });
  assert.equal(fromSnap.snapshot_id, snap.body.snapshot.id);
  assert.equal((await s.request('GET', `${V}/snapshots/${snap.body.snapshot.id}`)).body.snapshot.status, 'available');
  const r = await s.request('POST', `${V}/backups/${fromSnap.id}/restore`, { restore: {} });
  await waitForStatus(s, r.body.restore.volume_id, 'available');
  assert.equal(await digest(s, r.body.restore.volume_id), atSnapshot);

  // Reset status and force delete (admin).
  assert.equal((await s.request('POST', `${V}/backups/${fromSnap.id}/action`, { 'os-reset_status': { status: 'error' } })).status, 202);
  assert.equal((await s.request('GET', `${V}/backups/${fromSnap.id}`)).body.backup.status, 'error');
  assert.equal((await s.request('POST', `${V}/backups/${fromSnap.id}/action`, { 'os-force_delete': {} })).status, 202);
  await gone(s, fromSnap.id);

  // In use: attached over NBD and written there; the backup reads a snapshot taken with the writes held.
  const CONNECTOR = { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.test', mode: 'rw' };
  const a = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, connector: CONNECTOR } }, MV('3.54'));
  assert.equal(a.status, 200, JSON.stringify(a.body));
  assert.equal((await s.request('POST', `${V}/attachments/${a.body.attachment.id}/action`, { 'os-complete': null }, MV('3.54'))).status, 204);
  const uri = a.body.attachment.connection_info.data.uri as string;
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 64k', uri]);
  const attached = await digest(s, vol);
  assert.equal((await s.request('POST', `${V}/backups`, { backup: { volume_id: vol } })).status, 400, 'in use needs force');
  const hot = await backup(s, { volume_id: vol, force: true });
  await waitForStatus(s, vol, 'in-use');
  const r2 = await s.request('POST', `${V}/backups/${hot.id}/restore`, { restore: {} });
  await waitForStatus(s, r2.body.restore.volume_id, 'available');
  assert.equal(await digest(s, r2.body.restore.volume_id), attached, 'the backup of the in-use volume holds what was written over NBD');
  const files = fs.readdirSync(path.join(s.stateDir, 'volumes', 'file'));
  assert.equal(files.filter((f) => f.startsWith('snapshot-')).length, 1, 'the temporary snapshot is gone (only the user\'s remains)');
});

test('a volume created from a backup (3.47) holds its data', async (t) => {
  const s = await startTestServer(t);
  const vol = await volume(s, 1, { metadata: { from: 'source' } });
  write(s, vol, 5 * MiB, noise(2 * MiB, 11));
  const data = await digest(s, vol);
  const b = await backup(s, { volume_id: vol });
  const create = (body: Record<string, unknown>, v = '3.47') => s.request('POST', `${V}/volumes`, { volume: body }, MV(v));
  assert.equal((await create({ size: 1, backup_id: b.id }, '3.46')).status, 400, 'backup_id from 3.47');
  assert.equal((await create({ size: 1, backup_id: '00000000-0000-0000-0000-000000000000' })).status, 404);
  assert.equal((await create({ size: 1, backup_id: b.id, snapshot_id: null, source_volid: vol })).status, 400, 'one source');
  const big = await volume(s, 2);
  const b2 = await backup(s, { volume_id: big });
  const small = await create({ size: 1, backup_id: b2.id });
  assert.equal(small.status, 400);
  assert.match(small.body.badRequest.message, /cannot be smaller than the backup size 2GB/);
  assert.equal((await s.request('GET', `${V}/backups/${b2.id}`)).body.backup.status, 'available', 'nothing half-done');

  const made = await create({ size: 2, backup_id: b.id, name: 'from-backup' });
  assert.equal(made.status, 202, JSON.stringify(made.body));
  assert.equal((await s.request('GET', `${V}/backups/${b.id}`)).body.backup.status, 'restoring');
  const id = made.body.volume.id as string;
  const shown = await waitForStatus(s, id, 'available');
  assert.equal(shown.size, 2);
  assert.deepEqual(shown.metadata, { from: 'source' });
  assert.equal(await digest(s, id), data);
  await backupStatus(s, b.id, 'available');
  assert.equal((await s.request('DELETE', `${V}/backups/${b.id}`)).status, 202);
});
