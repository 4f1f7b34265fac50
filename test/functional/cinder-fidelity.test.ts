/**
 * Cinder's semantics where Basalt differed (issue 11): volume actions
 * (os-set_bootable, os-update_readonly_flag with a read-only export,
 * os-retype), the volume summary, force deletes from any status, snapshot
 * status updates, revert and 3.66 snapshot rules, list offsets, status codes
 * and headers.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const run = promisify(execFile);
const V = `/v3/${PROJECT}`;
const mv = (v: string) => ({ 'OpenStack-API-Version': `volume ${v}` });

async function volume(s: TestServer, body: Record<string, unknown> = {}): Promise<string> {
  const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1, ...body } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await waitForStatus(s, r.body.volume.id, 'available');
  return r.body.volume.id;
}

async function snapshot(s: TestServer, volumeId: string): Promise<string> {
  const r = await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: volumeId } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const id = r.body.snapshot.id as string;
  await waitFor(`snapshot ${id}`, async () => (await s.request('GET', `${V}/snapshots/${id}`)).body.snapshot.status === 'available');
  return id;
}

const act = (s: TestServer, id: string, body: unknown, headers?: Record<string, string>) => s.request('POST', `${V}/volumes/${id}/action`, body, headers);

test('os-set_bootable, os-update_readonly_flag (a read-only export) and the volume summary', async (t) => {
  const s = await startTestServer(t);
  const id = await volume(s, { metadata: { tier: 'gold' } });
  await volume(s, { metadata: { tier: 'silver' }, size: 2 });

  const boot = await act(s, id, { 'os-set_bootable': { bootable: 'True' } });
  assert.equal(boot.status, 200);
  assert.equal(boot.body, undefined, 'no body');
  assert.equal((await s.request('GET', `${V}/volumes/${id}`)).body.volume.bootable, 'true');
  assert.equal((await act(s, id, { 'os-set_bootable': { bootable: 'maybe' } })).status, 400);

  assert.equal((await act(s, id, { 'os-update_readonly_flag': { readonly: true } })).status, 202);
  assert.equal((await s.request('GET', `${V}/volumes/${id}`)).body.volume.metadata.readonly, 'True');
  assert.deepEqual((await s.request('GET', `${V}/volumes/${id}/metadata`)).body.metadata, { tier: 'gold' }, 'readonly is not user metadata');
  // Every attachment of a read-only volume is a read-only export, whatever mode it asks for.
  const a = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: id, connector: { host: 'h1', mode: 'rw' }, mode: 'rw' } }, mv('3.54'));
  assert.equal(a.status, 200, JSON.stringify(a.body));
  assert.equal(a.body.attachment.connection_info.data.access_mode, 'ro');
  const uri = a.body.attachment.connection_info.data.uri as string;
  const write = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4096', uri]).catch((e: { stdout: string; stderr: string }) => e);
  assert.match(`${write.stdout}${write.stderr}`, /Operation not permitted|read-only|Permission denied/i);
  assert.equal((await act(s, id, { 'os-update_readonly_flag': { readonly: false } })).status, 400, 'only while available');
  assert.equal((await s.request('DELETE', `${V}/attachments/${a.body.attachment.id}`, undefined, mv('3.54'))).status, 200);
  await waitForStatus(s, id, 'available');
  assert.equal((await act(s, id, { 'os-update_readonly_flag': { readonly: false } })).status, 202);
  assert.equal((await s.request('GET', `${V}/volumes/${id}`)).body.volume.metadata.readonly, 'False');

  assert.equal((await s.request('GET', `${V}/volumes/summary`, undefined, mv('3.11'))).status, 404, 'the summary exists from 3.12');
  assert.deepEqual((await s.request('GET', `${V}/volumes/summary`, undefined, mv('3.12'))).body, { 'volume-summary': { total_size: 3, total_count: 2 } });
  assert.deepEqual((await s.request('GET', `${V}/volumes/summary`, undefined, mv('3.36'))).body,
    { 'volume-summary': { total_size: 3, total_count: 2, metadata: { tier: ['gold', 'silver'] } } });
});

test('os-retype changes the type in place, moves per-type quota, and refuses what needs migration', async (t) => {
  const s = await startTestServer(t);
  const type = async (name: string, specs: Record<string, string> = {}) =>
    (await s.request('POST', `${V}/types`, { volume_type: { name, extra_specs: specs } })).body.volume_type.id as string;
  const gold = await type('gold');
  await type('silver');
  await type('elsewhere', { volume_backend_name: 'no-such-backend' });
  const id = await volume(s, { volume_type: gold });

  assert.equal((await act(s, id, { 'os-retype': { new_type: 'silver', migration_policy: 'never' } })).status, 202);
  const v = (await s.request('GET', `${V}/volumes/${id}`)).body.volume;
  assert.equal(v.volume_type, 'silver');
  assert.equal(v.status, 'available');
  const usage = (await s.request('GET', `${V}/os-quota-sets/${PROJECT}?usage=true`)).body.quota_set;
  assert.equal(usage.volumes_silver.in_use, 1);
  assert.equal(usage.volumes_gold.in_use, 0);
  assert.equal(usage.volumes.in_use, 1);

  const same = await act(s, id, { 'os-retype': { new_type: 'silver' } });
  assert.equal(same.status, 400);
  assert.match(same.body.badRequest.message, /same as original/);
  const away = await act(s, id, { 'os-retype': { new_type: 'elsewhere', migration_policy: 'on-demand' } });
  assert.equal(away.status, 400);
  assert.match(away.body.badRequest.message, /volume_backend_name.*migration/);
  assert.equal((await act(s, id, { 'os-retype': { new_type: 'nope' } })).status, 404);
  assert.equal((await act(s, id, { 'os-retype': {} })).status, 400);
  assert.equal((await s.request('GET', `${V}/volumes/${id}`)).body.volume.volume_type, 'silver', 'refusals change nothing');
});

test('force delete ignores the status; snapshot status updates; revert needs equal sizes; 3.66 snapshots need no force', async (t) => {
  const s = await startTestServer(t);
  const id = await volume(s);
  assert.equal((await act(s, id, { 'os-reset_status': { status: 'maintenance' } })).status, 202);
  assert.equal((await act(s, id, { 'os-force_delete': {} })).status, 202);
  await waitFor('force-deleted volume', async () => (await s.request('GET', `${V}/volumes/${id}`)).status === 404);

  const v2 = await volume(s);
  const snap = await snapshot(s, v2);
  const sact = (body: unknown) => s.request('POST', `${V}/snapshots/${snap}/action`, body);
  assert.equal((await sact({ 'os-update_snapshot_status': { status: 'error' } })).status, 400, 'available is not a status hosts report on');
  assert.equal((await sact({ 'os-reset_status': { status: 'creating' } })).status, 202);
  assert.equal((await sact({ 'os-update_snapshot_status': { status: 'available', progress: '100%' } })).status, 202);
  const reported = (await s.request('GET', `${V}/snapshots/${snap}`)).body.snapshot;
  assert.equal(reported.status, 'available');
  assert.equal(reported['os-extended-snapshot-attributes:progress'], '100%');
  assert.equal((await sact({ 'os-reset_status': { status: 'creating' } })).status, 202);
  assert.equal((await sact({ 'os-update_snapshot_status': { status: 'error', progress: '80%' } })).status, 202);
  assert.equal((await s.request('GET', `${V}/snapshots/${snap}`)).body.snapshot['os-extended-snapshot-attributes:progress'], '80%');
  assert.equal((await sact({ 'os-reset_status': { status: 'deleting' } })).status, 202);
  assert.equal((await sact({ 'os-update_snapshot_status': { status: 'available' } })).status, 400);
  assert.equal((await sact({ 'os-force_delete': {} })).status, 202, 'a deleting snapshot is force-deleted');
  await waitFor('force-deleted snapshot', async () => (await s.request('GET', `${V}/snapshots/${snap}`)).status === 404);

  const snap2 = await snapshot(s, v2);
  assert.equal((await act(s, v2, { 'os-extend': { new_size: 2 } })).status, 202);
  await waitForStatus(s, v2, 'available');
  const revert = await act(s, v2, { revert: { snapshot_id: snap2 } }, mv('3.40'));
  assert.equal(revert.status, 400);
  assert.match(revert.body.badRequest.message, /must be equal/);

  // In use: refused without force before 3.66, accepted without it from 3.66; force=false refused there.
  const a = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: v2, connector: { host: 'h1' } } }, mv('3.54'));
  assert.equal((await s.request('POST', `${V}/attachments/${a.body.attachment.id}/action`, { 'os-complete': null }, mv('3.54'))).status, 204);
  await waitForStatus(s, v2, 'in-use');
  assert.equal((await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: v2 } }, mv('3.65'))).status, 400);
  assert.equal((await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: v2, force: false } }, mv('3.66'))).status, 400);
  const inUse = await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: v2 } }, mv('3.66'));
  assert.equal(inUse.status, 202, JSON.stringify(inUse.body));
  assert.equal((await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: null } })).status, 404);
});

test('list offsets, trailing slashes, media types, status codes and version headers', async (t) => {
  const s = await startTestServer(t);
  const ids = [await volume(s, { name: 'a' }), await volume(s, { name: 'b' }), await volume(s, { name: 'c' })];
  const page = await s.request('GET', `${V}/volumes?sort=name:asc&limit=1&offset=1`);
  assert.deepEqual(page.body.volumes.map((v: { name: string }) => v.name), ['b']);
  assert.equal((await s.request('GET', `${V}/volumes?offset=-1`)).status, 400);
  assert.equal((await s.request('GET', `${V}/volumes/`)).status, 404);

  const vnd = await s.request('PUT', `${V}/volumes/${ids[0]}`, JSON.stringify({ volume: { name: 'renamed' } }), { 'Content-Type': 'application/vnd.openstack.volume+json' });
  assert.equal(vnd.status, 200);
  assert.equal(vnd.body.volume.name, 'renamed');
  assert.equal(vnd.body.volume['os-vol-tenant-attr:tenant_id'], undefined, 'update answers with the base view');

  assert.equal((await s.request('PUT', `${V}/os-services/disable`, { host: 'nowhere', binary: 'invalid_binary' })).status, 404);
  assert.equal((await s.request('PUT', `${V}/os-services/freeze`, { host: 'nowhere' })).status, 400);
  assert.equal((await s.request('PUT', `${V}/os-services/thaw`, { host: 'nowhere' })).status, 400);

  for (const p of ['/', '/v3', `${V}/volumes`]) {
    const r = await s.request('GET', p, undefined, mv('3.5'));
    assert.equal(r.headers.get('openstack-api-version'), 'volume 3.5', p);
    assert.equal(r.headers.get('vary'), 'OpenStack-API-Version', p);
  }
  const tooNew = await s.request('GET', `${V}/volumes`, undefined, mv('3.999'));
  assert.equal(tooNew.status, 406);
  assert.equal(tooNew.headers.get('openstack-api-version'), 'volume 3.999');
  assert.equal(tooNew.headers.get('vary'), 'OpenStack-API-Version');
});
