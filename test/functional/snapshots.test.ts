/** Snapshots, volumes from snapshots, clones, revert and cascade delete on the file backend, with real data. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const GiB = 1024 ** 3;

function file(s: TestServer, kind: 'volume' | 'snapshot', id: string): string {
  return path.join(s.stateDir, 'volumes', 'file', `${kind}-${id}`);
}

function writeFile(s: TestServer, id: string, offset: number, text: string): void {
  const fd = fs.openSync(file(s, 'volume', id), 'r+');
  fs.writeSync(fd, Buffer.from(text), 0, text.length, offset);
  fs.closeSync(fd);
}

function readFile(s: TestServer, kind: 'volume' | 'snapshot', id: string, offset: number, length: number): string {
  const fd = fs.openSync(file(s, kind, id), 'r');
  const b = Buffer.alloc(length);
  fs.readSync(fd, b, 0, length, offset);
  fs.closeSync(fd);
  return b.toString();
}

async function volume(s: TestServer, body: Record<string, unknown>): Promise<string> {
  const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1, ...body } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await waitForStatus(s, r.body.volume.id, 'available');
  return r.body.volume.id;
}

async function snapshot(s: TestServer, volumeId: string, extra: Record<string, unknown> = {}): Promise<string> {
  const r = await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: volumeId, ...extra } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await waitFor('snapshot available', async () => (await s.request('GET', `${V}/snapshots/${r.body.snapshot.id}`)).body.snapshot.status === 'available');
  return r.body.snapshot.id;
}

test('snapshots are point in time; volumes from them and clones are independent copies', async (t) => {
  const s = await startTestServer(t);
  const src = await volume(s, { name: 'src' });
  writeFile(s, src, 4096, 'before-snapshot');
  writeFile(s, src, GiB - 100, 'tail-data');

  const created = await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: src, name: 'snap1', description: 'first', metadata: { k: 'v' } } });
  assert.equal(created.status, 202);
  assert.equal(created.body.snapshot.status, 'creating');
  assert.equal(created.body.snapshot.size, 1);
  const snap = created.body.snapshot.id as string;
  await waitFor('snapshot available', async () => (await s.request('GET', `${V}/snapshots/${snap}`)).body.snapshot.status === 'available');
  writeFile(s, src, 4096, 'after--snapshot');

  assert.equal(readFile(s, 'snapshot', snap, 4096, 15), 'before-snapshot');
  const fromSnap = await volume(s, { snapshot_id: snap, size: 2 });
  const shown = (await s.request('GET', `${V}/volumes/${fromSnap}`)).body.volume;
  assert.equal(shown.snapshot_id, snap);
  assert.equal(shown.size, 2);
  assert.equal(fs.statSync(file(s, 'volume', fromSnap)).size, 2 * GiB);
  assert.equal(readFile(s, 'volume', fromSnap, 4096, 15), 'before-snapshot', 'a volume from a snapshot has the snapshot\'s data');
  assert.equal(readFile(s, 'volume', fromSnap, GiB - 100, 9), 'tail-data');

  const clone = await volume(s, { source_volid: src });
  assert.equal((await s.request('GET', `${V}/volumes/${clone}`)).body.volume.source_volid, src);
  assert.equal(readFile(s, 'volume', clone, 4096, 15), 'after--snapshot', 'a clone has the source\'s current data');
  writeFile(s, clone, 4096, 'written-to-clon');
  writeFile(s, fromSnap, 4096, 'written-to-copy');
  assert.equal(readFile(s, 'volume', src, 4096, 15), 'after--snapshot', 'writing the copies leaves the source alone');
  assert.equal(readFile(s, 'snapshot', snap, 4096, 15), 'before-snapshot', 'and the snapshot');

  // Show, list, detail, update, metadata.
  const one = (await s.request('GET', `${V}/snapshots/${snap}`, undefined, { 'OpenStack-API-Version': 'volume 3.41' })).body.snapshot;
  assert.equal(one.name, 'snap1');
  assert.deepEqual(one.metadata, { k: 'v' });
  assert.equal(one['os-extended-snapshot-attributes:progress'], '100%');
  assert.equal(one.user_id, 'admin');
  assert.deepEqual((await s.request('GET', `${V}/snapshots`)).body.snapshots.map((x: { id: string }) => x.id), [snap]);
  assert.equal((await s.request('GET', `${V}/snapshots/detail?volume_id=${src}`)).body.snapshots[0].description, 'first');
  assert.equal((await s.request('GET', `${V}/snapshots/detail?volume_id=${clone}`)).body.snapshots.length, 0);
  assert.equal((await s.request('PUT', `${V}/snapshots/${snap}`, { snapshot: { name: 'renamed' } })).body.snapshot.name, 'renamed');
  assert.deepEqual((await s.request('POST', `${V}/snapshots/${snap}/metadata`, { metadata: { a: '1' } })).body, { metadata: { a: '1', k: 'v' } });
  assert.equal((await s.request('DELETE', `${V}/snapshots/${snap}/metadata/k`)).status, 200);

  // Quota: a snapshot counts once and its size counts in gigabytes.
  const u = (await s.request('GET', `${V}/os-quota-sets/${PROJECT}?usage=true`)).body.quota_set;
  assert.equal(u.snapshots.in_use, 1);
  assert.equal(u.gigabytes.in_use, 1 + 2 + 1 + 1);

  // A volume with snapshots is deleted only with cascade.
  const refused = await s.request('DELETE', `${V}/volumes/${src}`);
  assert.equal(refused.status, 400);
  assert.match(refused.body.badRequest.message, /dependent snapshots/);
  assert.equal((await s.request('DELETE', `${V}/volumes/${src}?cascade=true`)).status, 202);
  await waitFor('source and snapshot gone', async () => (await s.request('GET', `${V}/volumes/${src}`)).status === 404
    && (await s.request('GET', `${V}/snapshots/${snap}`)).status === 404);
  assert.equal(fs.existsSync(file(s, 'volume', src)), false);
  assert.equal(fs.existsSync(file(s, 'snapshot', snap)), false);
  assert.equal(readFile(s, 'volume', fromSnap, 4096, 15), 'written-to-copy', 'copies outlive their source');
  const after = (await s.request('GET', `${V}/os-quota-sets/${PROJECT}?usage=true`)).body.quota_set;
  assert.equal(after.snapshots.in_use, 0);
  assert.equal(after.gigabytes.in_use, 3);
});

test('revert to the latest snapshot (3.40)', async (t) => {
  const s = await startTestServer(t);
  const mv = { 'OpenStack-API-Version': 'volume 3.40' };
  const vol = await volume(s, {});
  writeFile(s, vol, 0, 'generation-1');
  const first = await snapshot(s, vol);
  writeFile(s, vol, 0, 'generation-2');
  const latest = await snapshot(s, vol);
  writeFile(s, vol, 0, 'generation-3');

  assert.equal((await s.request('POST', `${V}/volumes/${vol}/action`, { revert: { snapshot_id: latest } })).status, 400, 'not before 3.40');
  const old = await s.request('POST', `${V}/volumes/${vol}/action`, { revert: { snapshot_id: first } }, mv);
  assert.equal(old.status, 400);
  assert.match(old.body.badRequest.message, /not the latest/);
  assert.equal((await s.request('POST', `${V}/volumes/${vol}/action`, { revert: { snapshot_id: latest } }, mv)).status, 202);
  await waitForStatus(s, vol, 'available');
  await waitFor('snapshot available again', async () => (await s.request('GET', `${V}/snapshots/${latest}`)).body.snapshot.status === 'available');
  assert.equal(readFile(s, 'volume', vol, 0, 12), 'generation-2');

  const other = await volume(s, {});
  const foreign = await s.request('POST', `${V}/volumes/${other}/action`, { revert: { snapshot_id: latest } }, mv);
  assert.equal(foreign.status, 400);
  assert.match(foreign.body.badRequest.message, /is not a snapshot of volume/);
});

test('snapshot bad input, busy volumes and deletion rules', async (t) => {
  const s = await startTestServer(t);
  const vol = await volume(s, {});
  assert.equal((await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: 'nope' } })).status, 400);
  assert.equal((await s.request('POST', `${V}/snapshots`, { snapshot: {} })).status, 400);
  assert.equal((await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: '00000000-0000-0000-0000-000000000000' } })).status, 404);
  assert.equal((await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: vol, bogus: 1 } }, { 'OpenStack-API-Version': 'volume 3.53' })).status, 400);
  const snap = await snapshot(s, vol);
  const small = await s.request('POST', `${V}/volumes`, { volume: { size: 1, snapshot_id: snap, availability_zone: 'elsewhere' } });
  assert.equal(small.status, 400);
  assert.equal((await s.request('POST', `${V}/volumes`, { volume: { size: 1, snapshot_id: '00000000-0000-0000-0000-000000000000' } })).status, 404);
  assert.equal((await s.request('POST', `${V}/volumes`, { volume: { size: 1, snapshot_id: snap, source_volid: vol } })).status, 400);

  // While a snapshot is being taken, the volume must not change.
  await s.server.db.kysely.updateTable('snapshots').set({ status: 'creating' }).where('id', '=', snap).execute();
  const busy = await s.request('POST', `${V}/volumes/${vol}/action`, { 'os-extend': { new_size: 2 } });
  assert.equal(busy.status, 400);
  assert.match(busy.body.badRequest.message, /busy: snapshot .* is creating/);
  assert.equal((await s.request('DELETE', `${V}/snapshots/${snap}`)).status, 400, 'a creating snapshot cannot be deleted');
  await s.server.db.kysely.updateTable('snapshots').set({ status: 'available' }).where('id', '=', snap).execute();

  assert.equal((await s.request('DELETE', `${V}/snapshots/${snap}`)).status, 202);
  await waitFor('snapshot gone', async () => (await s.request('GET', `${V}/snapshots/${snap}`)).status === 404);
  assert.equal(fs.existsSync(file(s, 'snapshot', snap)), false);
  assert.equal((await s.request('DELETE', `${V}/volumes/${vol}`)).status, 202, 'without snapshots a plain delete works');
});
