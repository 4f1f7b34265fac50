/** Quotas that cannot drift (issue 3, part 7). */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const MEMBER = { 'X-Auth-Token': 'alice:proj-a', 'X-Project-Id': 'proj-a' };

async function usage(s: TestServer, project = PROJECT): Promise<Record<string, { limit: number; in_use: number }>> {
  const r = await s.request('GET', `/v3/${PROJECT}/os-quota-sets/${project}?usage=True`);
  assert.equal(r.status, 200);
  assert.deepEqual(Object.keys(r.body.quota_set.volumes).sort(), ['in_use', 'limit', 'reserved'], "Cinder's usage keys");
  return r.body.quota_set;
}

test('50 concurrent creates against a quota of 10 leave exactly 10', async (t) => {
  const s = await startTestServer(t);
  const replies = await Promise.all(Array.from({ length: 50 }, (_, i) => s.request('POST', `${V}/volumes`, { volume: { size: 1, name: `q${i}` } })));
  const accepted = replies.filter((r) => r.status === 202);
  const refused = replies.filter((r) => r.status === 413);
  assert.equal(accepted.length, 10);
  assert.equal(refused.length, 40);
  assert.equal(refused[0]!.body.overLimit.message, "VolumeLimitExceeded: Maximum number of volumes allowed (10) exceeded for quota 'volumes'.");
  assert.equal((await s.request('GET', `${V}/volumes`)).body.volumes.length, 10, 'refused creates left nothing behind');
  const u = await usage(s);
  assert.equal(u.volumes!.in_use, 10);
  assert.equal(u.gigabytes!.in_use, 10);
});

test('quota-set show, update, defaults, usage, reset, class defaults and policy', async (t) => {
  const s = await startTestServer(t);
  const shown = await s.request('GET', `${V}/os-quota-sets/${PROJECT}`);
  assert.deepEqual(shown.body.quota_set, {
    id: PROJECT, volumes: 10, snapshots: 10, gigabytes: 1000, backups: 10, backup_gigabytes: 1000, groups: 10, per_volume_gigabytes: -1,
    // Per-type quotas of the default type, unlimited by default as in Cinder.
    volumes___DEFAULT__: -1, gigabytes___DEFAULT__: -1, snapshots___DEFAULT__: -1,
  });
  const updated = await s.request('PUT', `${V}/os-quota-sets/proj-a`, { quota_set: { tenant_id: 'proj-a', volumes: 2, gigabytes: '5' } });
  assert.equal(updated.status, 200);
  assert.equal(updated.body.quota_set.volumes, 2);
  assert.equal(updated.body.quota_set.gigabytes, 5);
  assert.equal((await s.request('GET', '/v3/proj-a/os-quota-sets/proj-a', undefined, MEMBER)).body.quota_set.volumes, 2, 'a member sees its own quotas');
  assert.equal((await s.request('GET', `/v3/proj-a/os-quota-sets/${PROJECT}`, undefined, MEMBER)).status, 403, 'but not another project\'s');
  assert.equal((await s.request('PUT', '/v3/proj-a/os-quota-sets/proj-a', { quota_set: { volumes: 100 } }, MEMBER)).status, 403);
  assert.equal((await s.request('GET', '/v3/proj-a/os-quota-sets/proj-a/defaults', undefined, MEMBER)).body.quota_set.volumes, 10);

  // Limits apply: size beyond gigabytes, then count beyond volumes.
  const big = await s.request('POST', '/v3/proj-a/volumes', { volume: { size: 6 } }, MEMBER);
  assert.equal(big.status, 413);
  assert.match(big.body.overLimit.message, /Requested 6G, quota is 5G and 0G has been consumed/);
  const a = await s.request('POST', '/v3/proj-a/volumes', { volume: { size: 2 } }, MEMBER);
  const b = await s.request('POST', '/v3/proj-a/volumes', { volume: { size: 2 } }, MEMBER);
  assert.equal(a.status, 202);
  assert.equal(b.status, 202);
  assert.equal((await s.request('POST', '/v3/proj-a/volumes', { volume: { size: 1 } }, MEMBER)).status, 413);
  const lim = (await s.request('GET', '/v3/proj-a/limits', undefined, MEMBER)).body.limits.absolute;
  assert.equal(lim.maxTotalVolumes, 2);
  assert.equal(lim.totalVolumesUsed, 2);
  assert.equal(lim.totalGigabytesUsed, 4);

  // Extends take gigabytes too.
  await waitFor('a available', async () => (await s.request('GET', `/v3/proj-a/volumes/${a.body.volume.id}`, undefined, MEMBER)).body.volume.status === 'available');
  const tooFar = await s.request('POST', `/v3/proj-a/volumes/${a.body.volume.id}/action`, { 'os-extend': { new_size: 4 } }, MEMBER);
  assert.equal(tooFar.status, 413);
  assert.equal((await s.request('GET', `/v3/proj-a/volumes/${a.body.volume.id}`, undefined, MEMBER)).body.volume.status, 'available', 'a refused extend changes nothing');
  assert.equal((await s.request('POST', `/v3/proj-a/volumes/${a.body.volume.id}/action`, { 'os-extend': { new_size: 3 } }, MEMBER)).status, 202);

  const bad = [
    [{ quota_set: { bogus: 1 } }, /Bad key\(s\) in quota set: bogus/],
    [{ quota_set: { volumes: -2 } }, /volumes/],
    [{ quota_set: { volumes: 'many' } }, /volumes/],
    [{ quota_set: { volumes: 1 } }, /must be equal or greater than existing resources/],
    [{ nope: {} }, /Missing required element 'quota_set'/],
  ] as const;
  for (const [body, message] of bad) {
    const r = await s.request('PUT', `${V}/os-quota-sets/proj-a`, body);
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.match(r.body.badRequest.message, message);
  }

  assert.equal((await s.request('DELETE', `${V}/os-quota-sets/proj-a`)).status, 200);
  assert.equal((await usage(s, 'proj-a')).volumes!.limit, 10, 'reset falls back to defaults');

  const cls = await s.request('PUT', `${V}/os-quota-class-sets/default`, { quota_class_set: { volumes: 3, per_volume_gigabytes: 2 } });
  assert.equal(cls.status, 200);
  assert.equal((await s.request('GET', `${V}/os-quota-class-sets/default`)).body.quota_class_set.volumes, 3);
  assert.equal((await s.request('GET', '/v3/proj-a/os-quota-class-sets/default', undefined, MEMBER)).status, 403);
  assert.equal((await usage(s, 'proj-b')).volumes!.limit, 3, 'the default class overrides configured defaults');
  const perVolume = await s.request('POST', '/v3/proj-b/volumes', { volume: { size: 3 } }, { 'X-Auth-Token': 'bob:proj-b' });
  assert.equal(perVolume.status, 413);
  assert.match(perVolume.body.overLimit.message, /VolumeSizeExceedsLimit: Requested volume size 3G is larger than maximum allowed limit 2G/);
});

test('usage stays exact through deletes, failed creates and failed extends', async (t) => {
  const s = await startTestServer(t, { env: { BASALT_BACKEND_DEFAULTS__TOTAL_CAPACITY_GB: '20', BASALT_BACKEND_DEFAULTS__MAX_OVER_SUBSCRIPTION_RATIO: '1' } });
  const ids: string[] = [];
  for (const size of [1, 2, 3]) ids.push((await s.request('POST', `${V}/volumes`, { volume: { size } })).body.volume.id);
  for (const id of ids) await waitForStatus(s, id, 'available');
  // A create no backend can hold: the error volume still counts until deleted, as in Cinder.
  const failed = (await s.request('POST', `${V}/volumes`, { volume: { size: 50 } })).body.volume.id;
  await waitForStatus(s, failed, 'error');
  let u = await usage(s);
  assert.deepEqual([u.volumes!.in_use, u.gigabytes!.in_use], [4, 56]);

  // An extend whose driver call fails permanently gives its gigabytes back.
  fs.unlinkSync(path.join(s.stateDir, 'volumes', 'file', `volume-${ids[0]}`));
  assert.equal((await s.request('POST', `${V}/volumes/${ids[0]}/action`, { 'os-extend': { new_size: 5 } })).status, 202);
  await waitForStatus(s, ids[0]!, 'error_extending');
  u = await usage(s);
  assert.deepEqual([u.volumes!.in_use, u.gigabytes!.in_use], [4, 56]);

  // A successful extend keeps its gigabytes.
  assert.equal((await s.request('POST', `${V}/volumes/${ids[1]}/action`, { 'os-extend': { new_size: 4 } })).status, 202);
  await waitFor('extended', async () => (await s.request('GET', `${V}/volumes/${ids[1]}`)).body.volume.size === 4);
  u = await usage(s);
  assert.deepEqual([u.volumes!.in_use, u.gigabytes!.in_use], [4, 58]);

  for (const id of [failed, ids[0]!, ids[2]!]) assert.equal((await s.request('DELETE', `${V}/volumes/${id}`)).status, 202);
  await waitFor('deleted', async () => (await s.request('GET', `${V}/volumes`)).body.volumes.length === 1);
  u = await usage(s);
  assert.deepEqual([u.volumes!.in_use, u.gigabytes!.in_use], [1, 4], 'usage equals what exists');
});
