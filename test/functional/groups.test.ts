/**
 * Generic volume groups: group types and specs (3.11), groups (3.13), group
 * snapshots and groups from them (3.14), reset status (3.19, 3.20), group
 * quotas; consistent group snapshots of attached members.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type net from 'node:net';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { connectExport, requestFrame } from '../helpers/nbd-raw.ts';
import { noauthCinder } from '../helpers/openstack-clients.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type Reply, type TestServer } from '../helpers/server.ts';
import { streamedEvents } from '../helpers/webhook-receiver.ts';

const run = promisify(execFile);
const V = `/v3/${PROJECT}`;
// 3.57: admins see `project_id` in groups and group snapshots from 3.58 (as in Cinder), a key tempest's schemas lack.
const MV = { 'OpenStack-API-Version': 'volume 3.57' };
const MEMBER = { 'X-Auth-Token': `member:${PROJECT}`, 'OpenStack-API-Version': 'volume 3.70' };
const BIN = path.resolve(import.meta.dirname, '../../bin/basalt.js');

const req = (s: TestServer, method: string, p: string, body?: unknown, headers: Record<string, string> = MV, unchecked?: string): Promise<Reply> =>
  s.request(method, `${V}${p}`, body, headers, unchecked === undefined ? {} : { unchecked });
const ADMIN_PROJECT_ID = "Cinder shows project_id to admins from 3.58; tempest's schema predates it";
const GROUP_SNAPSHOT_ID = "Cinder shows a snapshot's group_snapshot_id from 3.14; tempest's snapshot schema predates it";

async function ok(r: Promise<Reply>, status: number): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const res = await r;
  assert.equal(res.status, status, JSON.stringify(res.body));
  return res.body;
}

/** A volume type, a group type and a group allowing that volume type. */
async function setUp(s: TestServer): Promise<{ type: string; groupType: string; group: string }> {
  const type = (await ok(req(s, 'POST', '/types', { volume_type: { name: `t-${Math.random()}` } }), 200)).volume_type.id as string;
  const groupType = (await ok(req(s, 'POST', '/group_types', { group_type: { name: `gt-${Math.random()}` } }), 202)).group_type.id as string;
  const group = (await ok(req(s, 'POST', '/groups', { group: { name: 'g1', group_type: groupType, volume_types: [type] } }), 202)).group.id as string;
  return { type, groupType, group };
}

async function groupStatus(s: TestServer, id: string, status: string, kind = 'groups'): Promise<void> {
  await waitFor(`${kind} ${id} ${status}`, async () => (await req(s, 'GET', `/${kind}/${id}`)).body?.[kind === 'groups' ? 'group' : 'group_snapshot']?.status === status);
}

async function memberVolume(s: TestServer, type: string, group: string, extra: Record<string, unknown> = {}): Promise<string> {
  const v = (await ok(req(s, 'POST', '/volumes', { volume: { size: 1, volume_type: type, group_id: group, ...extra } }), 202)).volume;
  assert.equal(v.group_id, group);
  await waitForStatus(s, v.id, 'available');
  return v.id;
}

test('group types and group specs (3.11)', async (t) => {
  const s = await startTestServer(t, { env: { BASALT_DEFAULT_GROUP_TYPE: 'gt-default' } });
  assert.equal((await req(s, 'GET', '/group_types', undefined, { 'OpenStack-API-Version': 'volume 3.10' })).status, 404, 'not before 3.11');
  assert.equal((await req(s, 'GET', '/group_types/default')).status, 404, 'the configured default does not exist yet');
  const created = await ok(req(s, 'POST', '/group_types', { group_type: { name: 'gt-default', description: 'd', group_specs: { consistent_group_snapshot_enabled: '<is> True' } } }), 202);
  assert.deepEqual(Object.keys(created.group_type).sort(), ['description', 'group_specs', 'id', 'is_public', 'name']);
  const id = created.group_type.id as string;
  assert.equal((await ok(req(s, 'GET', '/group_types/default'), 200)).group_type.id, id);
  assert.equal((await req(s, 'POST', '/group_types', { group_type: { name: 'gt-default' } })).status, 409);
  const bad = await req(s, 'POST', '/group_types', { group_type: { name: 'x', group_specs: { 'a key': 'v' } } });
  assert.equal(bad.status, 400);
  assert.match(bad.body.badRequest.message, /group_specs/);
  await ok(req(s, 'POST', '/group_types', { group_type: { name: 'private', is_public: false } }), 202);

  // Lists: public by default; admins may ask for private ones or all; members never see specs.
  const names = async (q: string, h = MV) => (await ok(req(s, 'GET', `/group_types${q}`, undefined, h), 200)).group_types.map((x: { name: string }) => x.name);
  assert.deepEqual(await names(''), ['gt-default']);
  assert.deepEqual(await names('?is_public=false'), ['private']);
  assert.deepEqual(await names('?is_public=None&sort=name:desc'), ['private', 'gt-default']);
  assert.deepEqual(await names('?is_public=None&sort=name:asc&limit=1&offset=1'), ['private']);
  assert.deepEqual(await names('?is_public=None', MEMBER), ['gt-default']);
  assert.equal((await ok(req(s, 'GET', `/group_types/${id}`, undefined, MEMBER), 200)).group_type.group_specs, undefined);
  assert.equal((await req(s, 'POST', '/group_types', { group_type: { name: 'm' } }, MEMBER)).status, 403);

  const updated = await ok(req(s, 'PUT', `/group_types/${id}`, { group_type: { name: 'renamed', description: 'new' } }), 200);
  assert.equal(updated.group_type.name, 'renamed');
  assert.equal((await req(s, 'PUT', `/group_types/${id}`, { group_type: {} })).status, 400);

  // Specs.
  assert.deepEqual(await ok(req(s, 'POST', `/group_types/${id}/group_specs`, { group_specs: { k1: 'v1', k2: 'v2' } }), 202), { group_specs: { k1: 'v1', k2: 'v2' } });
  assert.deepEqual(await ok(req(s, 'GET', `/group_types/${id}/group_specs/k1`), 200), { k1: 'v1' });
  assert.deepEqual(await ok(req(s, 'PUT', `/group_types/${id}/group_specs/k1`, { k1: 'v1b' }), 200), { k1: 'v1b' });
  assert.equal((await req(s, 'PUT', `/group_types/${id}/group_specs/k1`, { k2: 'x' })).status, 400, 'body and URI must match');
  assert.deepEqual((await ok(req(s, 'GET', `/group_types/${id}/group_specs`), 200)).group_specs, { consistent_group_snapshot_enabled: '<is> True', k1: 'v1b', k2: 'v2' });
  await ok(req(s, 'DELETE', `/group_types/${id}/group_specs/k1`), 202);
  assert.equal((await req(s, 'GET', `/group_types/${id}/group_specs/k1`)).status, 404);
  assert.equal((await req(s, 'DELETE', `/group_types/${id}/group_specs/k1`)).status, 404);
  assert.equal((await req(s, 'GET', `/group_types/${id}/group_specs`, undefined, MEMBER)).status, 403);

  await ok(req(s, 'DELETE', `/group_types/${id}`), 202);
  assert.equal((await req(s, 'GET', `/group_types/${id}`)).status, 404);
});

test('groups: create, volumes created into them, add and remove, delete with volumes; group quota', async (t) => {
  const s = await startTestServer(t);
  assert.equal((await req(s, 'GET', '/groups', undefined, { 'OpenStack-API-Version': 'volume 3.12' })).status, 404, 'not before 3.13');
  const { type, groupType, group } = await setUp(s);
  const missing = await req(s, 'POST', '/groups', { group: { group_type: groupType } });
  assert.equal(missing.status, 400);
  assert.match(missing.body.badRequest.message, /volume_types/);
  assert.equal((await req(s, 'POST', '/groups', { group: { group_type: groupType, volume_types: ['nope'] } })).status, 404);
  assert.equal((await req(s, 'POST', '/groups', { group: { group_type: 'nope', volume_types: [type] } })).status, 404);

  const shown = (await ok(req(s, 'GET', `/groups/${group}`), 200)).group;
  assert.equal(shown.status, 'available');
  assert.equal(shown.group_type, groupType);
  assert.deepEqual(shown.volume_types, [type]);
  assert.equal(shown.replication_status, 'disabled');
  assert.equal(shown.project_id, undefined);
  assert.equal((await ok(req(s, 'GET', `/groups/${group}`, undefined, { 'OpenStack-API-Version': 'volume 3.58' }, ADMIN_PROJECT_ID), 200)).group.project_id, PROJECT, 'admins see the project from 3.58');
  assert.equal((await ok(req(s, 'GET', `/groups/${group}`, undefined, MEMBER), 200)).group.project_id, undefined);
  assert.deepEqual(Object.keys((await ok(req(s, 'GET', `/groups/${group}`, undefined, { 'OpenStack-API-Version': 'volume 3.13' }), 200)).group).sort(),
    ['availability_zone', 'created_at', 'description', 'group_type', 'id', 'name', 'status', 'volume_types']);

  // Volumes into the group: the type must be given and be one of the group's.
  const other = (await ok(req(s, 'POST', '/types', { volume_type: { name: 'other' } }), 200)).volume_type.id as string;
  const wrongType = await req(s, 'POST', '/volumes', { volume: { size: 1, volume_type: other, group_id: group } });
  assert.equal(wrongType.status, 400);
  assert.match(wrongType.body.badRequest.message, /volume_type/);
  assert.equal((await req(s, 'POST', '/volumes', { volume: { size: 1, group_id: group } })).status, 400, 'the type must be named');
  assert.equal((await req(s, 'POST', '/volumes', { volume: { size: 1, volume_type: type, group_id: '00000000-0000-0000-0000-000000000000' } })).status, 404);
  const v1 = await memberVolume(s, type, group);
  const v2 = await memberVolume(s, type, group);
  assert.equal((await ok(req(s, 'GET', `/volumes/${v1}`), 200)).volume.group_id, group);
  assert.deepEqual((await ok(req(s, 'GET', `/groups/${group}?list_volume=true`), 200)).group.volumes.sort(), [v1, v2].sort());
  assert.deepEqual((await ok(req(s, 'GET', `/volumes?group_id=${group}`), 200)).volumes.map((x: { id: string }) => x.id).sort(), [v1, v2].sort());
  const elsewhere = await req(s, 'POST', '/volumes', { volume: { size: 1, volume_type: type, group_id: group, availability_zone: 'other-zone' } });
  assert.equal(elsewhere.status, 400, 'a group\'s volumes are in its zone');
  assert.match(elsewhere.body.badRequest.message, /availability zone as its group/);
  const alone = await req(s, 'DELETE', `/volumes/${v1}`);
  assert.equal(alone.status, 400, 'a volume in a group is not deleted alone');
  assert.match(alone.body.badRequest.message, /group/);

  // Update: rename, remove, add back.
  await ok(req(s, 'PUT', `/groups/${group}`, { group: { name: 'renamed', description: 'd', remove_volumes: v2 } }), 202);
  assert.equal((await ok(req(s, 'GET', `/volumes/${v2}`), 200)).volume.group_id, null);
  assert.equal((await ok(req(s, 'GET', `/groups/${group}`), 200)).group.name, 'renamed');
  const both = await req(s, 'PUT', `/groups/${group}`, { group: { add_volumes: v2, remove_volumes: v2 } });
  assert.equal(both.status, 400);
  const notIn = await req(s, 'PUT', `/groups/${group}`, { group: { remove_volumes: v2 } });
  assert.equal(notIn.status, 400);
  assert.match(notIn.body.badRequest.message, /not in the group/);
  const foreign = (await ok(req(s, 'POST', '/volumes', { volume: { size: 1, volume_type: other } }), 202)).volume.id as string;
  await waitForStatus(s, foreign, 'available');
  const wrong = await req(s, 'PUT', `/groups/${group}`, { group: { add_volumes: foreign } });
  assert.equal(wrong.status, 400);
  assert.match(wrong.body.badRequest.message, /not supported by the group/);
  await ok(req(s, 'PUT', `/groups/${group}`, { group: { add_volumes: `${v2},` } }), 202);
  assert.equal((await ok(req(s, 'GET', `/volumes/${v2}`), 200)).volume.group_id, group);

  // Lists and filters.
  const listed = (await ok(req(s, 'GET', '/groups'), 200)).groups;
  assert.deepEqual(listed, [{ id: group, name: 'renamed' }]);
  assert.equal((await ok(req(s, 'GET', '/groups/detail?name=nope'), 200)).groups.length, 0);
  const another = await s.request('GET', '/v3/another/groups/detail', undefined, { ...MEMBER, 'X-Auth-Token': 'member:another' });
  assert.equal(another.status, 200);
  assert.equal(another.body.groups.length, 0, 'another project sees none');
  assert.equal((await s.request('GET', `/v3/another/groups/${group}`, undefined, { ...MEMBER, 'X-Auth-Token': 'member:another' })).status, 404);

  // Quota: a group counts in `groups`.
  const quota = async () => (await ok(req(s, 'GET', `/os-quota-sets/${PROJECT}?usage=true`), 200)).quota_set.groups;
  assert.equal((await quota()).in_use, 1);
  await ok(req(s, 'PUT', `/os-quota-sets/${PROJECT}`, { quota_set: { groups: 1 } }), 200);
  const over = await req(s, 'POST', '/groups', { group: { name: 'g', group_type: groupType, volume_types: [type] } });
  assert.equal(over.status, 413);
  assert.equal((await ok(req(s, 'GET', '/groups'), 200)).groups.length, 1, 'nothing half-created');

  // Delete: with volumes only when asked; the volumes go with it.
  const refused = await req(s, 'POST', `/groups/${group}/action`, { delete: { 'delete-volumes': false } });
  assert.equal(refused.status, 400);
  assert.match(refused.body.badRequest.message, /delete-volumes/);
  await ok(req(s, 'POST', `/groups/${group}/action`, { delete: { 'delete-volumes': true } }), 202);
  await waitFor('group gone', async () => (await req(s, 'GET', `/groups/${group}`)).status === 404);
  assert.equal((await req(s, 'GET', `/volumes/${v1}`)).status, 404);
  assert.equal((await req(s, 'GET', `/volumes/${v2}`)).status, 404);
  assert.equal(fs.existsSync(path.join(s.stateDir, 'volumes', 'file', `volume-${v1}`)), false);
  assert.equal((await quota()).in_use, 0);
  // A group type in use cannot go; once unused it can.
  const g2 = (await ok(req(s, 'POST', '/groups', { group: { name: 'g', group_type: groupType, volume_types: [type] } }), 202)).group.id;
  assert.equal((await req(s, 'DELETE', `/group_types/${groupType}`)).status, 400);
  assert.equal((await req(s, 'DELETE', `/types/${type}`)).status, 400, 'a volume type a group allows is in use');
  await ok(req(s, 'POST', `/groups/${g2}/action`, { delete: {} }), 202);
  await waitFor('empty group gone', async () => (await req(s, 'GET', `/groups/${g2}`)).status === 404);
  await ok(req(s, 'DELETE', `/group_types/${groupType}`), 202);

  // Reset status (3.20, admins).
  const g3 = (await setUp(s)).group;
  assert.equal((await req(s, 'POST', `/groups/${g3}/action`, { reset_status: { status: 'error' } }, { 'OpenStack-API-Version': 'volume 3.19' })).status, 400);
  assert.equal((await req(s, 'POST', `/groups/${g3}/action`, { reset_status: { status: 'error' } }, MEMBER)).status, 403);
  await ok(req(s, 'POST', `/groups/${g3}/action`, { reset_status: { status: 'error' } }), 202);
  await groupStatus(s, g3, 'error');
});

function volumeFile(s: TestServer, kind: 'volume' | 'snapshot', id: string): string {
  return path.join(s.stateDir, 'volumes', 'file', `${kind}-${id}`);
}

function writeAt(s: TestServer, id: string, text: string): void {
  const fd = fs.openSync(volumeFile(s, 'volume', id), 'r+');
  fs.writeSync(fd, Buffer.from(text), 0, text.length, 4096);
  fs.closeSync(fd);
}

function readAt(s: TestServer, kind: 'volume' | 'snapshot', id: string, length: number): string {
  const fd = fs.openSync(volumeFile(s, kind, id), 'r');
  const b = Buffer.alloc(length);
  fs.readSync(fd, b, 0, length, 4096);
  fs.closeSync(fd);
  return b.toString();
}

test('group snapshots, and groups from a group snapshot or from another group (3.14)', async (t) => {
  const s = await startTestServer(t);
  const { type, group } = await setUp(s);
  const [a, b] = [await memberVolume(s, type, group), await memberVolume(s, type, group)];
  writeAt(s, a, 'a-before');
  writeAt(s, b, 'b-before');
  assert.equal((await req(s, 'POST', '/group_snapshots', { group_snapshot: { group_id: group } }, { 'OpenStack-API-Version': 'volume 3.13' })).status, 404);
  const created = await ok(req(s, 'POST', '/group_snapshots', { group_snapshot: { group_id: group, name: 'gs1' } }), 202);
  const gs = created.group_snapshot.id as string;
  assert.deepEqual(Object.keys(created.group_snapshot).sort(), ['group_type_id', 'id', 'name']);
  await groupStatus(s, gs, 'available', 'group_snapshots');
  writeAt(s, a, 'a-after-');
  const members = (await ok(req(s, 'GET', '/snapshots/detail', undefined, MV, GROUP_SNAPSHOT_ID), 200)).snapshots.filter((x: { group_snapshot_id: string }) => x.group_snapshot_id === gs);
  assert.equal(members.length, 2);
  const snapOf = (v: string) => members.find((x: { volume_id: string }) => x.volume_id === v).id as string;
  assert.equal(readAt(s, 'snapshot', snapOf(a), 8), 'a-before');
  assert.equal(readAt(s, 'snapshot', snapOf(b), 8), 'b-before');
  const shown = (await ok(req(s, 'GET', `/group_snapshots/${gs}`), 200)).group_snapshot;
  assert.deepEqual([shown.group_id, shown.name, shown.status, shown.project_id], [group, 'gs1', 'available', undefined]);
  assert.equal((await ok(req(s, 'GET', `/group_snapshots/${gs}`, undefined, { 'OpenStack-API-Version': 'volume 3.58' }, ADMIN_PROJECT_ID), 200)).group_snapshot.project_id, PROJECT);
  assert.deepEqual((await ok(req(s, 'GET', '/group_snapshots'), 200)).group_snapshots, [{ id: gs, name: 'gs1' }]);
  assert.equal((await ok(req(s, 'GET', `/group_snapshots/detail?group_id=${group}`), 200)).group_snapshots.length, 1);
  const alone = await req(s, 'DELETE', `/snapshots/${snapOf(a)}`);
  assert.equal(alone.status, 400, 'a member snapshot is deleted with its group snapshot only');
  assert.match(alone.body.badRequest.message, /group snapshot/);
  const busy = await req(s, 'POST', `/groups/${group}/action`, { delete: { 'delete-volumes': true } });
  assert.equal(busy.status, 400);
  assert.match(busy.body.badRequest.message, /existing snapshots/);

  // A group from the group snapshot: one volume per member snapshot, with its data.
  const fromSnap = (await ok(req(s, 'POST', '/groups/action', { 'create-from-src': { group_snapshot_id: gs, name: 'copy' } }), 202)).group;
  assert.equal(fromSnap.name, 'copy');
  await groupStatus(s, fromSnap.id, 'available');
  const copied = (await ok(req(s, 'GET', `/groups/${fromSnap.id}?list_volume=true`), 200)).group;
  assert.equal(copied.group_snapshot_id, gs);
  assert.equal(copied.volumes.length, 2);
  const texts = copied.volumes.map((v: string) => readAt(s, 'volume', v, 8)).sort();
  assert.deepEqual(texts, ['a-before', 'b-before']);
  for (const v of copied.volumes) assert.equal((await ok(req(s, 'GET', `/volumes/${v}`), 200)).volume.status, 'available');

  // A group from another group: clones of its current data.
  const clone = (await ok(req(s, 'POST', '/groups/action', { 'create-from-src': { source_group_id: group, name: 'clone' } }), 202)).group;
  await groupStatus(s, clone.id, 'available');
  const cloned = (await ok(req(s, 'GET', `/groups/${clone.id}?list_volume=true`), 200)).group;
  assert.equal(cloned.source_group_id, group);
  assert.deepEqual(cloned.volumes.map((v: string) => readAt(s, 'volume', v, 8)).sort(), ['a-after-', 'b-before']);
  assert.equal((await req(s, 'POST', '/groups/action', { 'create-from-src': {} })).status, 400);
  assert.equal((await req(s, 'POST', '/groups/action', { 'create-from-src': { group_snapshot_id: '00000000-0000-0000-0000-000000000000' } })).status, 404);

  // Reset status (3.19) and delete: the member snapshots go with it.
  assert.equal((await req(s, 'POST', `/group_snapshots/${gs}/action`, { reset_status: { status: 'error' } }, MEMBER)).status, 403);
  await ok(req(s, 'POST', `/group_snapshots/${gs}/action`, { reset_status: { status: 'error' } }), 202);
  await groupStatus(s, gs, 'error', 'group_snapshots');
  await ok(req(s, 'DELETE', `/group_snapshots/${gs}`), 202);
  await waitFor('group snapshot gone', async () => (await req(s, 'GET', `/group_snapshots/${gs}`)).status === 404);
  assert.equal((await req(s, 'GET', `/snapshots/${snapOf(a)}`)).status, 404);
  assert.equal(fs.existsSync(volumeFile(s, 'snapshot', snapOf(a))), false);
  assert.equal((await ok(req(s, 'GET', `/os-quota-sets/${PROJECT}?usage=true`), 200)).quota_set.snapshots.in_use, 0);
  for (const g of [group, fromSnap.id, clone.id]) await ok(req(s, 'POST', `/groups/${g}/action`, { delete: { 'delete-volumes': true } }), 202);
  await waitFor('groups gone', async () => (await ok(req(s, 'GET', '/groups'), 200)).groups.length === 0);
  assert.equal((await ok(req(s, 'GET', '/volumes'), 200)).volumes.length, 0);
});

/** Writes `gen` as 8 bytes at offset 0 through a raw NBD connection and waits for the reply. */
async function nbdWrite(sock: net.Socket, cookie: bigint, gen: number): Promise<void> {
  const data = Buffer.alloc(4096);
  data.writeBigUInt64BE(BigInt(gen), 0);
  const reply = new Promise<Buffer>((resolve) => {
    let got = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= 16) { sock.off('data', onData); resolve(got); }
    };
    sock.on('data', onData);
  });
  sock.write(requestFrame(1, cookie, 0n, 4096, data));
  const r = await reply;
  assert.equal(r.readUInt32BE(4), 0, 'write succeeded');
}

test('a group snapshot holds the writes of every attached member at once: the members are one point in time', async (t) => {
  const s = await startTestServer(t);
  const { type, group } = await setUp(s);
  const vols = [await memberVolume(s, type, group), await memberVolume(s, type, group)];
  const socks: net.Socket[] = [];
  for (const v of vols) {
    const a = await ok(req(s, 'POST', '/attachments', { attachment: { volume_uuid: v, connector: { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.test', mode: 'rw' } } }), 200);
    await ok(req(s, 'POST', `/attachments/${a.attachment.id}/action`, { 'os-complete': null }), 204);
    const info = a.attachment.connection_info.data;
    const sock = await connectExport(info.host, info.port, info.export_name);
    t.after(() => sock.destroy());
    socks.push(sock);
  }
  // The writer stamps generation n on the first member, then on the second, then n+1…: at any
  // point in time the first holds n and the second n or n-1.
  let stop = false;
  let gen = 0;
  const writer = (async () => {
    while (!stop) {
      gen++;
      await nbdWrite(socks[0]!, BigInt(gen * 2), gen);
      await nbdWrite(socks[1]!, BigInt(gen * 2 + 1), gen);
    }
  })();
  await waitFor('writes flowing', async () => gen > 20);
  const gs = (await ok(req(s, 'POST', '/group_snapshots', { group_snapshot: { group_id: group, name: 'gs' } }), 202)).group_snapshot.id as string;
  await groupStatus(s, gs, 'available', 'group_snapshots');
  const atSnapshot = gen;
  await waitFor('writes resume', async () => gen > atSnapshot + 20);
  stop = true;
  await writer;
  const snaps = (await ok(req(s, 'GET', '/snapshots/detail', undefined, MV, GROUP_SNAPSHOT_ID), 200)).snapshots;
  const genIn = (v: string) => {
    const id = snaps.find((x: { volume_id: string; group_snapshot_id: string }) => x.volume_id === v && x.group_snapshot_id === gs).id;
    const fd = fs.openSync(volumeFile(s, 'snapshot', id), 'r');
    const b = Buffer.alloc(8);
    fs.readSync(fd, b, 0, 8, 0);
    fs.closeSync(fd);
    return Number(b.readBigUInt64BE(0));
  };
  const [first, second] = [genIn(vols[0]!), genIn(vols[1]!)];
  assert.ok(first > 20, `the writer was running (generation ${first})`);
  assert.ok(first - second === 0 || first - second === 1, `one point in time across the group: ${first} and ${second}`);
});

test('a group snapshot is refused while a member is attached as a local loop device on a pool that copies', async (t) => {
  const s = await startTestServer(t);
  const { type, group } = await setUp(s);
  const [a, b] = [await memberVolume(s, type, group), await memberVolume(s, type, group)];
  const cli = (...args: string[]) => run(process.execPath, [BIN, ...args, '--url', s.url, '--project', PROJECT]);
  const device = (await cli('attach', a)).stdout.trim();
  assert.match(device, /^\/dev\/loop\d+$/);
  t.after(() => run('losetup', ['-d', device]).catch(() => undefined));
  const used = async () => (await ok(req(s, 'GET', `/os-quota-sets/${PROJECT}?usage=true`), 200)).quota_set.snapshots.in_use as number;
  const refused = await req(s, 'POST', '/group_snapshots', { group_snapshot: { group_id: group } });
  assert.equal(refused.status, 400);
  assert.match(refused.body.badRequest.message, new RegExp(`${a} is attached as a local loop device.*detach it, or attach it over NBD`));
  assert.equal((await ok(req(s, 'GET', '/group_snapshots'), 200)).group_snapshots.length, 0, 'nothing half-created');
  assert.equal((await ok(req(s, 'GET', '/snapshots'), 200)).snapshots.length, 0);
  assert.equal(await used(), 0);
  await cli('detach', a);
  const gs = (await ok(req(s, 'POST', '/group_snapshots', { group_snapshot: { group_id: group, name: 'gs' } }), 202)).group_snapshot.id as string;
  await groupStatus(s, gs, 'available', 'group_snapshots');
  assert.equal(await used(), 2);
  assert.ok(b);
});

test('python3-cinderclient drives group types, groups, volumes in them and group snapshots', async (t) => {
  const s = await startTestServer(t);
  const project = 'cafe0000000000000000000000000002';
  const cinder = (...args: string[]): Promise<string> => noauthCinder(s, project, '--os-volume-api-version', '3.14', ...args);
  const field = (out: string, name: string): string => new RegExp(`\\|\\s*${name}\\s*\\|\\s*(\\S+)\\s*\\|`).exec(out)![1]!;
  await cinder('type-create', 'gold');
  await cinder('group-type-create', 'gold-group');
  const group = field(await cinder('group-create', '--name', 'db', 'gold-group', 'gold'), 'id');
  const vol = field(await cinder('create', '--group-id', group, '--volume-type', 'gold', '1'), 'id');
  const P = `/v3/${project}`;
  const H = { ...MV, 'X-Auth-Token': `admin:${project}` };
  await waitFor('volume available', async () => (await s.request('GET', `${P}/volumes/${vol}`, undefined, H)).body.volume.status === 'available');
  assert.match(await cinder('group-show', group), /\|\s*status\s*\|\s*available\s*\|/);
  const gs = field(await cinder('group-snapshot-create', '--name', 'nightly', group), 'id');
  await waitFor('group snapshot available', async () => (await s.request('GET', `${P}/group_snapshots/${gs}`, undefined, H)).body.group_snapshot.status === 'available');
  assert.match(await cinder('group-snapshot-list'), /nightly/);
  const copy = field(await cinder('group-create-from-src', '--group-snapshot', gs, '--name', 'copy'), 'id');
  await waitFor('copy available', async () => (await s.request('GET', `${P}/groups/${copy}`, undefined, H)).body.group.status === 'available');
  await cinder('group-delete', '--delete-volumes', copy);
  await cinder('group-snapshot-delete', gs);
  await waitFor('group snapshot gone', async () => (await s.request('GET', `${P}/group_snapshots/${gs}`, undefined, H)).status === 404);
  await cinder('group-delete', '--delete-volumes', group);
  await waitFor('groups gone', async () => (await s.request('GET', `${P}/groups`, undefined, H)).body.groups.length === 0);
  assert.equal((await s.request('GET', `${P}/volumes`, undefined, H)).body.volumes.length, 0);
});

test('failures settle groups with their members: a failed group from a group snapshot, a group snapshot left creating', async (t) => {
  const s = await startTestServer(t);
  const { type, group } = await setUp(s);
  const v = await memberVolume(s, type, group);
  const gs = (await ok(req(s, 'POST', '/group_snapshots', { group_snapshot: { group_id: group, name: 'gs' } }), 202)).group_snapshot.id as string;
  await groupStatus(s, gs, 'available', 'group_snapshots');
  const snap = (await s.server.db.kysely.selectFrom('snapshots').select('id').where('group_snapshot_id', '=', gs).executeTakeFirstOrThrow()).id;

  // The backend loses the snapshot's data: making a group from it fails, and the group and its volume say so.
  fs.rmSync(volumeFile(s, 'snapshot', snap));
  const copy = (await ok(req(s, 'POST', '/groups/action', { 'create-from-src': { group_snapshot_id: gs, name: 'copy' } }), 202)).group.id as string;
  await groupStatus(s, copy, 'error');
  const copied = (await ok(req(s, 'GET', `/groups/${copy}?list_volume=true`), 200)).group.volumes as string[];
  await waitForStatus(s, copied[0]!, 'error');
  const msgs = await req(s, 'GET', `/messages?resource_uuid=${copied[0]}`);
  assert.match(msgs.body.messages[0].user_message, /^create volume: /);
  await ok(req(s, 'POST', `/groups/${copy}/action`, { delete: { 'delete-volumes': true } }), 202);
  await waitFor('failed group deleted', async () => (await req(s, 'GET', `/groups/${copy}`)).status === 404);

  // A group snapshot whose job is gone is failed by the sweeper, with its member snapshots.
  await s.server.db.kysely.updateTable('group_snapshots').set({ status: 'creating', updated_at: '2000-01-01T00:00:00.000Z' }).where('id', '=', gs).execute();
  await s.server.db.kysely.updateTable('snapshots').set({ status: 'creating', updated_at: '2000-01-01T00:00:00.000Z' }).where('id', '=', snap).execute();
  await s.server.sweeper.sweepOnce();
  await groupStatus(s, gs, 'error', 'group_snapshots');
  assert.equal((await ok(req(s, 'GET', `/snapshots/${snap}`, undefined, MV, GROUP_SNAPSHOT_ID), 200)).snapshot.status, 'error');
  assert.match((await req(s, 'GET', `/messages?resource_uuid=${snap}`)).body.messages[0].user_message, /^snapshot create: The operation was interrupted/);
  // The events say why (issue 17 part 2): the groups' in the detail's words, the members' with their user message.
  const events = await streamedEvents(s, PROJECT);
  const failedTo = (id: string) => events.find((e) => e.data.resource_id === id && e.event.endsWith('.status') && /^error/.test(e.data.to_status ?? ''))?.data.detail;
  assert.deepEqual(failedTo(copy), { reason: 'The storage backend failed to complete the operation.' });
  assert.match(failedTo(copied[0]!)?.reason, /^create volume: /);
  assert.deepEqual(failedTo(gs), { reason: 'The operation was interrupted and did not finish; it was stopped so the volume is not left in a transitional status.' });
  assert.equal(failedTo(snap)?.message_event_id, 'VOLUME_SNAPSHOT_009_012');
  await ok(req(s, 'DELETE', `/group_snapshots/${gs}`), 202);
  await waitFor('failed group snapshot deleted', async () => (await req(s, 'GET', `/group_snapshots/${gs}`)).status === 404);
  assert.ok(v);
});

test('a group\'s volumes share the pool of its first volume, across backends', async (t) => {
  const ini = ['[DEFAULT]', 'enabled_backends = one, two', '[backend_defaults]', 'volume_driver = memory'].join('\n');
  const s = await startTestServer(t, { ini });
  const { type, group } = await setUp(s);
  const first = await memberVolume(s, type, group);
  const host = (await ok(req(s, 'GET', `/volumes/${first}`), 200)).volume['os-vol-host-attr:host'] as string;
  const other = host.includes('@one#') ? 'two' : 'one';
  // The first volume's backend stops taking volumes: the next member has nowhere to go, though the other backend is up.
  const serviceHost = host.split('#')[0]!;
  await ok(req(s, 'PUT', '/os-services/disable', { host: serviceHost, binary: 'cinder-volume' }), 200);
  const stuck = (await ok(req(s, 'POST', '/volumes', { volume: { size: 1, volume_type: type, group_id: group } }), 202)).volume.id as string;
  await waitForStatus(s, stuck, 'error');
  const outside = (await ok(req(s, 'POST', '/volumes', { volume: { size: 1, volume_type: type } }), 202)).volume.id as string;
  const placed = await waitForStatus(s, outside, 'available');
  assert.match(placed['os-vol-host-attr:host'], new RegExp(`@${other}#`));
  const refused = await req(s, 'PUT', `/groups/${group}`, { group: { add_volumes: outside } });
  assert.equal(refused.status, 400, 'a volume of another pool cannot join');
  assert.match(refused.body.badRequest.message, /not local/);
  await ok(req(s, 'PUT', '/os-services/enable', { host: serviceHost, binary: 'cinder-volume' }), 200);
  const second = await memberVolume(s, type, group);
  assert.equal((await ok(req(s, 'GET', `/volumes/${second}`), 200)).volume['os-vol-host-attr:host'], host);
});
