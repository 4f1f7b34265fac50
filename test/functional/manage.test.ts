/** Manage and unmanage (issue 12, part 5) on the file backend, with real data. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const GiB = 1024 ** 3;

const folder = (s: TestServer): string => path.join(s.stateDir, 'volumes', 'file');

function writeAt(file: string, offset: number, text: string): void {
  const fd = fs.openSync(file, fs.existsSync(file) ? 'r+' : 'w');
  fs.writeSync(fd, Buffer.from(text), 0, text.length, offset);
  fs.closeSync(fd);
}

function readAt(file: string, offset: number, length: number): string {
  const fd = fs.openSync(file, 'r');
  const b = Buffer.alloc(length);
  fs.readSync(fd, b, 0, length, offset);
  fs.closeSync(fd);
  return b.toString();
}

/** A volume's host string, learnt from a volume made for it. */
async function hostOf(s: TestServer): Promise<string> {
  const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } });
  const v = await waitForStatus(s, r.body.volume.id, 'available');
  return v['os-vol-host-attr:host'];
}

test('a file put in the folder by hand is managed, unmanaged with its data kept, and managed back', async (t) => {
  const s = await startTestServer(t);
  const host = await hostOf(s);
  // 1.5 GiB by hand: the volume is 2 GiB (rounded up by growing the file, never cutting it).
  const hand = path.join(folder(s), 'imported-disk');
  writeAt(hand, 4096, 'hand-placed');
  fs.truncateSync(hand, 1.5 * GiB);

  const r = await s.request('POST', `${V}/os-volume-manage`, { volume: { host, ref: { 'source-name': 'imported-disk' }, name: 'adopted' } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  assert.equal(r.body.volume.status, 'creating', 'managing is shown as creating');
  const id = r.body.volume.id as string;
  const v = await waitForStatus(s, id, 'available');
  assert.equal(v.size, 2);
  assert.equal(v.name, 'adopted');
  assert.equal(v['os-vol-host-attr:host'], host);
  assert.ok(!fs.existsSync(hand), 'the file now has Basalt\'s name');
  const own = path.join(folder(s), `volume-${id}`);
  assert.equal(fs.statSync(own).size, 2 * GiB);
  assert.equal(readAt(own, 4096, 11), 'hand-placed');
  const usage = (await s.request('GET', `${V}/os-quota-sets/${PROJECT}?usage=true`)).body.quota_set;
  assert.equal(usage.gigabytes.in_use, 3, 'the managed volume counts its 2 GiB');

  // Unmanage: the row goes, the data stays under a name a manage request can give.
  const u = await s.request('POST', `${V}/volumes/${id}/action`, { 'os-unmanage': {} });
  assert.equal(u.status, 202, JSON.stringify(u.body));
  await waitFor('volume gone', async () => (await s.request('GET', `${V}/volumes/${id}`)).status === 404);
  const kept = path.join(folder(s), `unmanaged-volume-${id}`);
  assert.equal(readAt(kept, 4096, 11), 'hand-placed');
  assert.equal((await s.request('GET', `${V}/os-quota-sets/${PROJECT}?usage=true`)).body.quota_set.gigabytes.in_use, 1);

  // Managed back (3.8 path, with cluster from 3.16): the same data.
  const again = await s.request('POST', `${V}/manageable_volumes`, { volume: { cluster: host.split('#')[0], ref: { 'source-name': `unmanaged-volume-${id}` } } },
    { 'OpenStack-API-Version': 'volume 3.16' });
  assert.equal(again.status, 202, JSON.stringify(again.body));
  const back = again.body.volume.id as string;
  await waitForStatus(s, back, 'available');
  assert.equal(readAt(path.join(folder(s), `volume-${back}`), 4096, 11), 'hand-placed');
});

test('snapshots are unmanaged and managed back with their data', async (t) => {
  const s = await startTestServer(t);
  const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } });
  const vol = r.body.volume.id as string;
  await waitForStatus(s, vol, 'available');
  writeAt(path.join(folder(s), `volume-${vol}`), 0, 'snapshotted');
  const sn = await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: vol } });
  const snap = sn.body.snapshot.id as string;
  await waitFor('snapshot available', async () => (await s.request('GET', `${V}/snapshots/${snap}`)).body.snapshot.status === 'available');

  assert.equal((await s.request('POST', `${V}/snapshots/${snap}/action`, { 'os-unmanage': {} })).status, 202);
  await waitFor('snapshot gone', async () => (await s.request('GET', `${V}/snapshots/${snap}`)).status === 404);
  assert.equal(readAt(path.join(folder(s), `unmanaged-snapshot-${snap}`), 0, 11), 'snapshotted');

  const m = await s.request('POST', `${V}/os-snapshot-manage`, { snapshot: { volume_id: vol, ref: { 'source-name': `unmanaged-snapshot-${snap}` }, name: 'back', metadata: { k: 'v' } } });
  assert.equal(m.status, 202, JSON.stringify(m.body));
  const back = m.body.snapshot.id as string;
  await waitFor('managed snapshot available', async () => (await s.request('GET', `${V}/snapshots/${back}`)).body.snapshot.status === 'available');
  const shown = (await s.request('GET', `${V}/snapshots/${back}`)).body.snapshot;
  assert.equal(shown.name, 'back');
  assert.deepEqual(shown.metadata, { k: 'v' });
  assert.equal(readAt(path.join(folder(s), `snapshot-${back}`), 0, 11), 'snapshotted');
  // A volume made from it has the data.
  const c = await s.request('POST', `${V}/volumes`, { volume: { size: 1, snapshot_id: back } });
  await waitForStatus(s, c.body.volume.id, 'available');
  assert.equal(readAt(path.join(folder(s), `volume-${c.body.volume.id}`), 0, 11), 'snapshotted');
});

test('bad manage requests are refused naming what is wrong, and nothing is half-created', async (t) => {
  const s = await startTestServer(t);
  const host = await hostOf(s);
  const count = async (): Promise<number> => (await s.request('GET', `${V}/volumes`)).body.volumes.length;
  const before = await count();
  const refuse = async (body: unknown, status: number, pattern: RegExp): Promise<void> => {
    const r = await s.request('POST', `${V}/os-volume-manage`, body);
    assert.equal(r.status, status, JSON.stringify(r.body));
    assert.match(JSON.stringify(r.body), pattern);
  };
  await refuse({ volume: { host } }, 400, /ref/);
  await refuse({ volume: { host, ref: 'imported' } }, 400, /ref/);
  await refuse({ volume: { host, ref: {} } }, 400, /ref/);
  await refuse({ volume: { host, ref: { 'source-name': 7 } } }, 400, /source-name/);
  await refuse({ volume: { ref: { 'source-name': 'x' } } }, 400, /host/);
  await refuse({ volume: { host: 'nowhere@file#file', ref: { 'source-name': 'x' } } }, 404, /nowhere@file/);
  await refuse({ volume: { host: `${host.split('#')[0]}#nopool`, ref: { 'source-name': 'x' } } }, 400, /nopool/);
  await refuse({ volume: { host, ref: { 'source-name': 'x' }, volume_type: 'no-such-type' } }, 404, /no-such-type/);
  assert.equal(await count(), before, 'no row for a refused request');

  // A reference the backend does not have: the row fails as error (error_managing), with a user message; deleting it leaves the folder alone.
  fs.writeFileSync(path.join(folder(s), 'bystander'), 'keep');
  const r = await s.request('POST', `${V}/os-volume-manage`, { volume: { host, ref: { 'source-name': 'missing-file' } } });
  assert.equal(r.status, 202);
  const failed = await waitForStatus(s, r.body.volume.id, 'error');
  assert.equal(failed.size, 0);
  const msgs = (await s.request('GET', `${V}/messages`, undefined, { 'OpenStack-API-Version': 'volume 3.3' })).body.messages;
  assert.ok(msgs.some((m: { resource_uuid: string; user_message: string }) => m.resource_uuid === r.body.volume.id && /create volume from backend storage/.test(m.user_message)), JSON.stringify(msgs));
  // Basalt's own file cannot be adopted twice.
  const own = (await s.request('GET', `${V}/volumes/detail`)).body.volumes.find((x: { status: string }) => x.status === 'available').id;
  const dup = await s.request('POST', `${V}/os-volume-manage`, { volume: { host, ref: { 'source-name': `volume-${own}` } } });
  await waitForStatus(s, dup.body.volume.id, 'error');
  assert.ok(fs.existsSync(path.join(folder(s), `volume-${own}`)), 'the owned file is untouched');
  for (const id of [r.body.volume.id, dup.body.volume.id]) {
    assert.equal((await s.request('DELETE', `${V}/volumes/${id}`)).status, 202);
    await waitFor('failed manage deleted', async () => (await s.request('GET', `${V}/volumes/${id}`)).status === 404);
  }
  assert.equal(fs.readFileSync(path.join(folder(s), 'bystander'), 'utf8'), 'keep');
  assert.ok(fs.existsSync(path.join(folder(s), `volume-${own}`)));

  // Unmanage refuses a volume with snapshots.
  const sn = await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: own } });
  await waitFor('snapshot available', async () => (await s.request('GET', `${V}/snapshots/${sn.body.snapshot.id}`)).body.snapshot.status === 'available');
  const u = await s.request('POST', `${V}/volumes/${own}/action`, { 'os-unmanage': {} });
  assert.equal(u.status, 400);
  assert.match(JSON.stringify(u.body), /snapshots/);
});

test('the 3.8 listings show what the backend could adopt: Basalt\'s own volumes as not safe, a hand-placed file as safe', async (t) => {
  const s = await startTestServer(t);
  const host = await hostOf(s);
  const owned = (await s.request('GET', `${V}/volumes`)).body.volumes[0].id as string;
  fs.writeFileSync(path.join(folder(s), 'spare-disk'), 'x');
  const H38 = { 'OpenStack-API-Version': 'volume 3.8' };
  type Entry = { reference: Record<string, string>; size: number; safe_to_manage: boolean; reason_not_safe?: string | null; cinder_id?: string | null };
  const detail = await waitFor('the next heartbeat lists the new file', async () => {
    const r = await s.request('GET', `${V}/manageable_volumes/detail?host=${encodeURIComponent(host)}`, undefined, H38);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const list = r.body['manageable-volumes'] as Entry[];
    return list.some((e) => e.reference['source-name'] === 'spare-disk') ? list : undefined;
  });
  const spare = detail.find((e) => e.reference['source-name'] === 'spare-disk')!;
  assert.deepEqual(spare, { reference: { 'source-name': 'spare-disk' }, size: 1, safe_to_manage: true, reason_not_safe: null, cinder_id: null, extra_info: null });
  const mine = detail.find((e) => e.cinder_id === owned)!;
  assert.equal(mine.safe_to_manage, false);
  assert.equal(mine.reason_not_safe, 'Already managed');
  const summary = (await s.request('GET', `${V}/manageable_volumes?host=${encodeURIComponent(host)}&sort_keys=size&sort_dirs=asc&limit=1`, undefined, H38)).body['manageable-volumes'];
  assert.equal(summary.length, 1);
  assert.deepEqual(Object.keys(summary[0]).sort(), ['reference', 'safe_to_manage', 'size']);
  const snaps = await s.request('GET', `${V}/manageable_snapshots/detail?host=${encodeURIComponent(host)}`, undefined, H38);
  assert.equal(snaps.status, 200);
  assert.deepEqual(snaps.body['manageable-snapshots'], []);

  // Refusals name what is wrong; below 3.8 the listing does not exist.
  assert.equal((await s.request('GET', `${V}/manageable_volumes?host=${encodeURIComponent(host)}`, undefined, { 'OpenStack-API-Version': 'volume 3.7' })).status, 404);
  const noHost = await s.request('GET', `${V}/manageable_volumes`, undefined, H38);
  assert.equal(noHost.status, 400);
  assert.match(JSON.stringify(noHost.body), /host/);
  const badSort = await s.request('GET', `${V}/manageable_volumes?host=${encodeURIComponent(host)}&sort_keys=name`, undefined, H38);
  assert.equal(badSort.status, 400);
  assert.match(JSON.stringify(badSort.body), /sort keys.*name/);
  assert.equal((await s.request('GET', `${V}/manageable_volumes?host=elsewhere@file`, undefined, H38)).status, 404);
  // A member may not list.
  const member = await s.request('GET', `${V}/manageable_volumes?host=${encodeURIComponent(host)}`, undefined, { ...H38, 'X-Auth-Token': `alice:${PROJECT}`, 'X-Roles': 'member' });
  assert.equal(member.status, 403);
});
