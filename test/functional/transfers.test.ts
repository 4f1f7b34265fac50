/**
 * Volume transfers (issue 6): os-volume-transfer and 3.55 volume-transfers —
 * offer, list, show, wrong and right keys, the volume (with or without its
 * snapshots) and its quota moving to the accepting project, withdrawal, and a
 * destination over quota refusing without moving anything.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PROJECT, startTestServer, waitForStatus, type TestServer } from '../helpers/server.ts';

const OTHER = 'b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0';
const A = { 'X-Auth-Token': `alice:${PROJECT}`, 'X-Roles': 'member' };
const B = { 'X-Auth-Token': `bob:${OTHER}`, 'X-Roles': 'member' };
const V355 = { 'OpenStack-API-Version': 'volume 3.57' };

async function volumeWithSnapshot(s: TestServer): Promise<{ volume: string; snapshot: string }> {
  const volume = (await s.request('POST', `/v3/${PROJECT}/volumes`, { volume: { size: 2 } }, A)).body.volume.id as string;
  await waitForStatus(s, volume, 'available');
  const snapshot = (await s.request('POST', `/v3/${PROJECT}/snapshots`, { snapshot: { volume_id: volume } }, A)).body.snapshot.id as string;
  for (let i = 0; i < 200 && (await s.request('GET', `/v3/${PROJECT}/snapshots/${snapshot}`, undefined, A)).body.snapshot.status !== 'available'; i++) {
    await new Promise((r) => setTimeout(r, 25));
  }
  return { volume, snapshot };
}

async function usage(s: TestServer, project: string): Promise<{ volumes: number; snapshots: number; gigabytes: number }> {
  const q = (await s.request('GET', `/v3/${project}/os-quota-sets/${project}?usage=true`, undefined, { 'X-Auth-Token': `x:${project}`, 'X-Roles': 'member' })).body.quota_set;
  return { volumes: q.volumes.in_use, snapshots: q.snapshots.in_use, gigabytes: q.gigabytes.in_use };
}

test('os-volume-transfer: offer, wrong key, accept moves volume, snapshots and quota', async (t) => {
  const s = await startTestServer(t);
  const { volume, snapshot } = await volumeWithSnapshot(s);
  const created = await s.request('POST', `/v3/${PROJECT}/os-volume-transfer`, { transfer: { volume_id: volume, name: 'for-bob' } }, A);
  assert.equal(created.status, 202, JSON.stringify(created.body));
  const { id, auth_key: key } = created.body.transfer as { id: string; auth_key: string };
  assert.match(key, /^[0-9a-f]{16}$/);
  assert.equal((await s.request('GET', `/v3/${PROJECT}/volumes/${volume}`, undefined, A)).body.volume.status, 'awaiting-transfer');
  assert.equal((await s.request('DELETE', `/v3/${PROJECT}/volumes/${volume}`, undefined, A)).status, 400, 'an offered volume cannot be deleted');
  const listed = (await s.request('GET', `/v3/${PROJECT}/os-volume-transfer/detail`, undefined, A)).body.transfers as Array<Record<string, unknown>>;
  assert.deepEqual(listed.map((x) => [x.id, x.name, x.volume_id]), [[id, 'for-bob', volume]]);
  assert.equal(listed[0]!.auth_key, undefined, 'the key is shown only at creation');
  assert.equal((await s.request('GET', `/v3/${OTHER}/os-volume-transfer/${id}`, undefined, B)).status, 404, 'other projects do not see offers');

  const wrong = await s.request('POST', `/v3/${OTHER}/os-volume-transfer/${id}/accept`, { accept: { auth_key: 'not-the-key' } }, B);
  assert.equal(wrong.status, 400);
  assert.match(wrong.body.badRequest.message, /invalid auth key/);
  assert.equal((await s.request('POST', `/v3/${OTHER}/os-volume-transfer/${id}/accept`, {}, B)).status, 400);

  const before = { a: await usage(s, PROJECT), b: await usage(s, OTHER) };
  const accepted = await s.request('POST', `/v3/${OTHER}/os-volume-transfer/${id}/accept`, { accept: { auth_key: key } }, B);
  assert.equal(accepted.status, 202, JSON.stringify(accepted.body));
  assert.deepEqual([accepted.body.transfer.id, accepted.body.transfer.volume_id], [id, volume]);
  const moved = (await s.request('GET', `/v3/${OTHER}/volumes/${volume}`, undefined, B)).body.volume;
  assert.deepEqual([moved.status, moved.user_id], ['available', 'bob']);
  assert.equal((await s.request('GET', `/v3/${PROJECT}/volumes/${volume}`, undefined, A)).status, 404);
  assert.equal((await s.request('GET', `/v3/${OTHER}/snapshots/${snapshot}`, undefined, B)).status, 200, 'the snapshot moved with it');
  assert.deepEqual(await usage(s, PROJECT), { volumes: before.a.volumes - 1, snapshots: before.a.snapshots - 1, gigabytes: before.a.gigabytes - 4 });
  assert.deepEqual(await usage(s, OTHER), { volumes: before.b.volumes + 1, snapshots: before.b.snapshots + 1, gigabytes: before.b.gigabytes + 4 });
  assert.equal((await s.request('GET', `/v3/${PROJECT}/os-volume-transfer/${id}`, undefined, A)).status, 404, 'an accepted transfer is gone');
  assert.equal((await s.request('POST', `/v3/${OTHER}/os-volume-transfer/${id}/accept`, { accept: { auth_key: key } }, B)).status, 404);
});

test('volume-transfers (3.55): no_snapshots, withdrawal, and a destination over quota', async (t) => {
  const s = await startTestServer(t);
  const { volume, snapshot } = await volumeWithSnapshot(s);
  assert.equal((await s.request('POST', `/v3/${PROJECT}/volume-transfers`, { transfer: { volume_id: volume } }, { ...A, 'OpenStack-API-Version': 'volume 3.54' })).status, 404);

  // Withdrawn: the volume is available to its project again.
  let r = await s.request('POST', `/v3/${PROJECT}/volume-transfers`, { transfer: { volume_id: volume, no_snapshots: true } }, { ...A, ...V355 });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  assert.deepEqual([r.body.transfer.no_snapshots, r.body.transfer.source_project_id, r.body.transfer.accepted], [true, PROJECT, false]);
  assert.equal((await s.request('DELETE', `/v3/${PROJECT}/volume-transfers/${r.body.transfer.id}`, undefined, { ...A, ...V355 })).status, 202);
  assert.equal((await s.request('GET', `/v3/${PROJECT}/volumes/${volume}`, undefined, A)).body.volume.status, 'available');

  // A destination with no room refuses; nothing moves.
  r = await s.request('POST', `/v3/${PROJECT}/volume-transfers`, { transfer: { volume_id: volume, no_snapshots: true } }, { ...A, ...V355 });
  const { id, auth_key: key } = r.body.transfer as { id: string; auth_key: string };
  assert.equal((await s.request('PUT', `/v3/${PROJECT}/os-quota-sets/${OTHER}`, { quota_set: { gigabytes: 1 } })).status, 200);
  const full = await s.request('POST', `/v3/${OTHER}/volume-transfers/${id}/accept`, { accept: { auth_key: key } }, { ...B, ...V355 });
  assert.equal(full.status, 413, JSON.stringify(full.body));
  assert.equal((await s.request('GET', `/v3/${PROJECT}/volumes/${volume}`, undefined, A)).body.volume.status, 'awaiting-transfer');
  assert.equal((await usage(s, OTHER)).volumes, 0);

  assert.equal((await s.request('PUT', `/v3/${PROJECT}/os-quota-sets/${OTHER}`, { quota_set: { gigabytes: 100 } })).status, 200);
  assert.equal((await s.request('POST', `/v3/${OTHER}/volume-transfers/${id}/accept`, { accept: { auth_key: key } }, { ...B, ...V355 })).status, 202);
  assert.equal((await s.request('GET', `/v3/${OTHER}/volumes/${volume}`, undefined, B)).status, 200);
  assert.equal((await s.request('GET', `/v3/${PROJECT}/snapshots/${snapshot}`, undefined, A)).status, 200, 'no_snapshots: the snapshot stays');
  assert.deepEqual(await usage(s, OTHER), { volumes: 1, snapshots: 0, gigabytes: 2 });
});
