/**
 * Destroy data last (issue 12, part 2): deleting a volume first releases
 * every row that refers to it (a reserved attachment, a pending transfer) and
 * removes its storage only when the row's removal is certain. Each case starts
 * the way Cinder's docs advise for a stuck volume: an admin resets it to
 * available, and its owner deletes it.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const OWNER = { 'X-Auth-Token': `alice:${PROJECT}`, 'X-Roles': 'member' };
const MV = { 'OpenStack-API-Version': 'volume 3.54' };

async function availableVolume(s: TestServer): Promise<string> {
  const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } }, OWNER);
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await waitForStatus(s, r.body.volume.id, 'available');
  return r.body.volume.id;
}

const fileOf = (s: TestServer, id: string): string => path.join(s.stateDir, 'volumes', 'file', `volume-${id}`);

async function usage(s: TestServer): Promise<{ volumes: number; gigabytes: number }> {
  const q = (await s.request('GET', `${V}/os-quota-sets/${PROJECT}?usage=true`, undefined, OWNER)).body.quota_set;
  return { volumes: q.volumes.in_use, gigabytes: q.gigabytes.in_use };
}

async function resetToAvailable(s: TestServer, id: string): Promise<void> {
  const r = await s.request('POST', `${V}/volumes/${id}/action`, { 'os-reset_status': { status: 'available' } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
}

/** Waits until the volume is gone, failing at once if it settles in an error status instead. */
async function waitGone(s: TestServer, id: string): Promise<void> {
  await waitFor(`volume ${id} to be deleted`, async () => {
    const r = await s.request('GET', `${V}/volumes/${id}`);
    if (r.status === 404) return true;
    assert.notEqual(r.body.volume.status, 'error_deleting', `volume ${id} failed to delete`);
    return false;
  });
}

for (const force of [false, true]) {
  test(`issue 12: a volume reset to available with a reserved attachment is ${force ? 'force-' : ''}deleted whole`, async (t) => {
    const s = await startTestServer(t);
    const before = await usage(s);
    const vol = await availableVolume(s);
    const att = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol } }, { ...OWNER, ...MV });
    assert.equal(att.status, 200, JSON.stringify(att.body));
    await resetToAvailable(s, vol);
    const del = force
      ? await s.request('POST', `${V}/volumes/${vol}/action`, { 'os-force_delete': {} })
      : await s.request('DELETE', `${V}/volumes/${vol}`, undefined, OWNER);
    assert.equal(del.status, 202, JSON.stringify(del.body));
    await waitGone(s, vol);
    assert.equal(fs.existsSync(fileOf(s, vol)), false, 'its storage went with the row');
    assert.equal((await s.request('GET', `${V}/attachments/${att.body.attachment.id}`, undefined, MV)).status, 404, 'the attachment was released');
    assert.deepEqual(await usage(s), before, 'its quota was given back');
  });
}

test('issue 12: a volume whose attachment is attached is not deleted, even after a reset of both statuses', async (t) => {
  const s = await startTestServer(t);
  const vol = await availableVolume(s);
  const att = await s.request('POST', `${V}/attachments`, {
    attachment: { volume_uuid: vol, connector: { host: 'compute-1', ip: '127.0.0.1', mode: 'rw' } },
  }, { ...OWNER, ...MV });
  assert.equal(att.status, 200, JSON.stringify(att.body));
  assert.equal((await s.request('POST', `${V}/attachments/${att.body.attachment.id}/action`, { 'os-complete': null }, { ...OWNER, 'OpenStack-API-Version': 'volume 3.44' })).status, 204);
  const r = await s.request('POST', `${V}/volumes/${vol}/action`, { 'os-reset_status': { status: 'available', attach_status: 'detached' } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const del = await s.request('DELETE', `${V}/volumes/${vol}`, undefined, OWNER);
  assert.equal(del.status, 400, 'a host still uses it');
  assert.match(del.body.badRequest.message, /attach/);
  const forced = await s.request('POST', `${V}/volumes/${vol}/action`, { 'os-force_delete': {} });
  assert.equal(forced.status, 400, 'not even by force: detach it first');
  assert.equal((await s.request('GET', `${V}/volumes/${vol}`)).body.volume.status, 'available');
  assert.ok(fs.existsSync(fileOf(s, vol)), 'the data is still there');
});

test('issue 12: a volume reset to available with a pending transfer is deleted whole, and the offer with it', async (t) => {
  const s = await startTestServer(t);
  const before = await usage(s);
  const vol = await availableVolume(s);
  const offer = await s.request('POST', `${V}/os-volume-transfer`, { transfer: { volume_id: vol } }, OWNER);
  assert.equal(offer.status, 202, JSON.stringify(offer.body));
  await resetToAvailable(s, vol);
  const del = await s.request('DELETE', `${V}/volumes/${vol}`, undefined, OWNER);
  assert.equal(del.status, 202, JSON.stringify(del.body));
  await waitGone(s, vol);
  assert.equal(fs.existsSync(fileOf(s, vol)), false);
  assert.equal((await s.request('GET', `${V}/os-volume-transfer/${offer.body.transfer.id}`, undefined, OWNER)).status, 404, 'the offer went with the volume');
  assert.deepEqual(await usage(s), before);
});

test('issue 12: a transfer offered again after a reset replaces the stale offer', async (t) => {
  const s = await startTestServer(t);
  const vol = await availableVolume(s);
  const first = await s.request('POST', `${V}/os-volume-transfer`, { transfer: { volume_id: vol } }, OWNER);
  assert.equal(first.status, 202, JSON.stringify(first.body));
  await resetToAvailable(s, vol);
  const second = await s.request('POST', `${V}/os-volume-transfer`, { transfer: { volume_id: vol } }, OWNER);
  assert.equal(second.status, 202, JSON.stringify(second.body));
  assert.equal((await s.request('GET', `${V}/os-volume-transfer/${first.body.transfer.id}`, undefined, OWNER)).status, 404, 'the stale offer was withdrawn');
  const listed = (await s.request('GET', `${V}/os-volume-transfer`, undefined, OWNER)).body.transfers as Array<{ id: string }>;
  assert.deepEqual(listed.map((x) => x.id), [second.body.transfer.id]);
  assert.equal((await s.request('GET', `${V}/volumes/${vol}`)).body.volume.status, 'awaiting-transfer');
  assert.ok(fs.existsSync(fileOf(s, vol)));
});

test('issue 12: a group deleted with its volumes releases a member reset to available with a reserved attachment', async (t) => {
  const s = await startTestServer(t);
  const GV = { 'OpenStack-API-Version': 'volume 3.57' };
  const type = (await s.request('POST', `${V}/types`, { volume_type: { name: 'gt-member' } })).body.volume_type.id as string;
  const groupType = (await s.request('POST', `${V}/group_types`, { group_type: { name: 'gt' } }, GV)).body.group_type.id as string;
  const group = (await s.request('POST', `${V}/groups`, { group: { name: 'g', group_type: groupType, volume_types: [type] } }, GV)).body.group.id as string;
  await waitFor('group available', async () => (await s.request('GET', `${V}/groups/${group}`, undefined, GV)).body.group.status === 'available');
  const vol = (await s.request('POST', `${V}/volumes`, { volume: { size: 1, volume_type: type, group_id: group } }, GV)).body.volume.id as string;
  await waitForStatus(s, vol, 'available');
  assert.equal((await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol } }, MV)).status, 200);
  await resetToAvailable(s, vol);
  const del = await s.request('POST', `${V}/groups/${group}/action`, { delete: { 'delete-volumes': true } }, GV);
  assert.equal(del.status, 202, JSON.stringify(del.body));
  await waitFor('group deleted', async () => {
    const r = await s.request('GET', `${V}/groups/${group}`, undefined, GV);
    assert.notEqual(r.body?.group?.status, 'error_deleting', 'the group failed to delete');
    return r.status === 404;
  });
  assert.equal((await s.request('GET', `${V}/volumes/${vol}`)).status, 404);
  assert.equal(fs.existsSync(fileOf(s, vol)), false);
});
