/**
 * Group replication (issue 16 part 3, Cinder's 3.38 group actions) between
 * two file backends of one process: `alpha` replicates to `beta`. A group of
 * a type with `consistent_group_replication_enabled` ships its members'
 * asynchronous points as one group point; after a failover both secondaries
 * hold exactly that point, and a failback brings the group home.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bytesOf, fileOf, REPLICATING_BACKENDS } from '../helpers/backends.ts';
import { fileDigest } from '../helpers/file-digest.ts';
import { noauthCinder } from '../helpers/openstack-clients.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';
import fs from 'node:fs';

const V = `/v3/${PROJECT}`;
const MiB = 1024 ** 2;
const GiB = 1024 * MiB;
const MV = { 'OpenStack-API-Version': 'volume 3.38' };
/** A long RPO: no point ships by itself during the test, only the group points it asks for. */
const REPLICATED = { replication_enabled: '<is> True', 'basalt:replication_mode': 'async', 'basalt:replication_rpo_seconds': '3600' };

async function post(s: TestServer, path: string, body: unknown, status: number, headers: Record<string, string> = MV): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await s.request('POST', `${V}${path}`, body, headers);
  assert.equal(r.status, status, `${path} ${JSON.stringify(body)}: ${JSON.stringify(r.body)}`);
  return r.body;
}

const action = (s: TestServer, group: string, body: unknown, status: number, headers: Record<string, string> = MV) => post(s, `/groups/${group}/action`, body, status, headers);
const group = async (s: TestServer, id: string) => (await s.request('GET', `${V}/groups/${id}`, undefined, MV)).body.group;
const volume = async (s: TestServer, id: string) => (await s.request('GET', `${V}/volumes/${id}`)).body.volume;
const replication = async (s: TestServer, id: string) => (await s.request('GET', `${V}/volumes/${id}/replication`)).body.replication;

/** Fills `length` bytes of a volume's file at `offset` with `byte`. */
function fill(file: string, offset: number, length: number, byte: number): void {
  const fd = fs.openSync(file, 'r+');
  try { fs.writeSync(fd, Buffer.alloc(length, byte), 0, length, offset); } finally { fs.closeSync(fd); }
}

test('group replication: consistent group points, failover to one point across volumes, failback, and Cinder\'s 400s', async (t) => {
  const s = await startTestServer(t, { ini: REPLICATING_BACKENDS });
  await post(s, '/types', { volume_type: { name: 'repl', extra_specs: REPLICATED } }, 200, {});
  await post(s, '/types', { volume_type: { name: 'plain', extra_specs: { volume_backend_name: 'alpha' } } }, 200, {});
  await post(s, '/group_types', { group_type: { name: 'replicated', group_specs: { consistent_group_replication_enabled: '<is> True' } } }, 202);
  await post(s, '/group_types', { group_type: { name: 'unreplicated' } }, 202);
  const newGroup = async (groupType: string, volumeTypes: string[]) => (await post(s, '/groups', { group: { name: groupType, group_type: groupType, volume_types: volumeTypes } }, 202)).group.id as string;
  const g = await newGroup('replicated', ['repl']);
  const plainType = await newGroup('unreplicated', ['repl']);
  const plainVolumes = await newGroup('replicated', ['plain']);
  const member = async (gid: string, type: string) => (await post(s, '/volumes', { volume: { size: 1, volume_type: type, group_id: gid } }, 202)).volume.id as string;
  const a = await member(g, 'repl');
  const b = await member(g, 'repl');
  for (const id of [a, b]) await waitForStatus(s, id, 'available');
  assert.equal((await group(s, g)).replication_status, 'disabled');

  // Cinder's refusals: wrong microversion, a group type without the spec, a volume type without replication, nothing to fail back.
  const old = await s.request('POST', `${V}/groups/${g}/action`, { enable_replication: {} }, { 'OpenStack-API-Version': 'volume 3.37' });
  assert.equal(old.status, 404);
  assert.ok(old.body.itemNotFound);
  assert.match((await action(s, plainType, { enable_replication: {} }, 400)).badRequest.message, /not a replication group type/);
  assert.match((await action(s, plainVolumes, { enable_replication: {} }, 400)).badRequest.message, /does not have 'replication_enabled'/);
  assert.match((await action(s, g, { failover_replication: {} }, 400)).badRequest.message, /replication status must be enabled or failed-over/);
  await action(s, g, { enable_replication: { extra: 1 } }, 400);
  assert.deepEqual(await action(s, g, { list_replication_targets: {} }, 200), { replication_targets: [{ backend_id: 'beta' }] });

  // Distinct data on each member, then a group point (enabling ships the first one).
  fill(fileOf(s.stateDir, 'alpha', a), 0, MiB, 0xa1);
  fill(fileOf(s.stateDir, 'alpha', b), 2 * MiB, MiB, 0xb1);
  await action(s, g, { enable_replication: {} }, 202);
  await waitFor('group replication enabled', async () => (await group(s, g)).replication_status === 'enabled');
  for (const id of [a, b]) assert.equal((await volume(s, id)).replication_status, 'enabled');
  const [ra, rb] = [await replication(s, a), await replication(s, b)];
  assert.equal(ra.last_point_at, rb.last_point_at, 'both members are at one group point');
  const atPoint = { a: await fileDigest(fileOf(s.stateDir, 'alpha', a), GiB), b: await fileDigest(fileOf(s.stateDir, 'alpha', b), GiB) };

  // Written after the point: the secondaries must not have it after a failover.
  fill(fileOf(s.stateDir, 'alpha', a), 0, MiB, 0xa2);
  fill(fileOf(s.stateDir, 'alpha', b), 2 * MiB, MiB, 0xb2);
  fill(fileOf(s.stateDir, 'alpha', b), 8 * MiB, MiB, 0xb2);

  assert.match((await action(s, g, { failover_replication: { secondary_backend_id: 'gamma' } }, 400)).badRequest.message, /gamma is not a replication target/);
  assert.match((await action(s, g, { failover_replication: { secondary_backend_id: 'default' } }, 400)).badRequest.message, /not failed over/);
  await action(s, g, { failover_replication: { allow_attached_volume: 'maybe' } }, 400);

  // An attached member needs allow_attached_volume.
  const A = { 'OpenStack-API-Version': 'volume 3.54' };
  const att = (await post(s, '/attachments', { attachment: { volume_uuid: a, connector: { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.test', mode: 'rw' } } }, 200, A)).attachment;
  await post(s, `/attachments/${att.id}/action`, { 'os-complete': null }, 204, A);
  assert.match((await action(s, g, { failover_replication: { secondary_backend_id: 'beta' } }, 400)).badRequest.message, /allow_attached_volume/);
  assert.equal((await s.request('DELETE', `${V}/attachments/${att.id}`, undefined, A)).status, 200);
  await waitForStatus(s, a, 'available');

  // A group point cut off midway: the members ship in id order, and the second one's copy cannot be
  // reached, so the first one's copy is written past the group point before the point fails.
  const db = s.server.db.kysely;
  await waitFor('the copies\' checkpoints of the group point', async () => {
    const rows = await db.selectFrom('volume_replicas').select(['last_point_id', 'checkpoint_point_id']).where('volume_id', 'in', [a, b]).execute();
    return rows.length === 2 && rows.every((r) => r.checkpoint_point_id === r.last_point_id);
  });
  const [first, second] = [a, b].sort();
  await db.deleteFrom('volume_exports').where('volume_id', '=', second!).where('purpose', '=', 'replication').execute();
  await db.updateTable('volume_replicas').set({ last_point_at: '2000-01-01T00:00:00.000Z' }).where('volume_id', 'in', [a, b]).execute();
  await waitFor('the first copy written past the group point', async () => {
    const r = await db.selectFrom('volume_replicas').selectAll().where('volume_id', '=', first!).executeTakeFirst();
    return r?.shipping_point_id && r.last_error && (await fileDigest(fileOf(s.stateDir, 'beta', first!), GiB)) !== atPoint[first === a ? 'a' : 'b'];
  });
  // What a primary that died there leaves: the rows as before the point, its mark still set. (The loop's
  // retries stop once the point is not due; one already running may mark the members again: repeat.)
  await waitFor('the rows as a dead primary leaves them', async () => {
    await db.updateTable('volume_replicas').set({ state: 'enabled', last_point_at: new Date().toISOString() }).where('volume_id', 'in', [a, b]).execute();
    await db.updateTable('volumes').set({ replication_status: 'enabled' }).where('id', 'in', [a, b]).execute();
    await new Promise((resolve) => setTimeout(resolve, 2000));
    return (await db.selectFrom('volumes').select('replication_status').where('id', 'in', [a, b]).execute()).every((v) => v.replication_status === 'enabled');
  });

  await action(s, g, { failover_replication: { secondary_backend_id: 'beta' } }, 202);
  await waitFor('group failed over', async () => (await group(s, g)).replication_status === 'failed-over');
  for (const id of [a, b]) {
    const v = await volume(s, id);
    assert.deepEqual([v.replication_status, /@beta#/.test(v['os-vol-host-attr:host'])], ['failed-over', true]);
  }
  // Consistency across the group: each secondary holds exactly its volume as of the one group point
  // (the copy written past it went back to its checkpoint).
  assert.equal(await fileDigest(fileOf(s.stateDir, 'beta', a), GiB), atPoint.a);
  assert.equal(await fileDigest(fileOf(s.stateDir, 'beta', b), GiB), atPoint.b);
  assert.ok(bytesOf(fileOf(s.stateDir, 'beta', a), 0, MiB).equals(Buffer.alloc(MiB, 0xa1)));
  assert.ok(bytesOf(fileOf(s.stateDir, 'beta', b), 8 * MiB, MiB).equals(Buffer.alloc(MiB)));
  assert.match((await action(s, g, { failover_replication: { secondary_backend_id: 'beta' } }, 400)).badRequest.message, /failed over already/);
  assert.deepEqual(await action(s, g, { list_replication_targets: null }, 200), { replication_targets: [{ backend_id: 'beta' }] });

  // Written while failed over, on beta; then failback: alpha's own writes after the point are overwritten.
  fill(fileOf(s.stateDir, 'beta', a), 5 * MiB, MiB, 0xa3);
  await action(s, g, { failover_replication: { secondary_backend_id: 'default' } }, 202);
  await waitFor('group failed back', async () => (await group(s, g)).replication_status === 'enabled');
  for (const id of [a, b]) {
    const v = await volume(s, id);
    assert.deepEqual([v.replication_status, /@alpha#/.test(v['os-vol-host-attr:host'])], ['enabled', true]);
    assert.equal(await fileDigest(fileOf(s.stateDir, 'alpha', id), GiB), await fileDigest(fileOf(s.stateDir, 'beta', id), GiB));
  }
  assert.ok(bytesOf(fileOf(s.stateDir, 'alpha', a), 5 * MiB, MiB).equals(Buffer.alloc(MiB, 0xa3)), 'written on beta while failed over');
  assert.ok(bytesOf(fileOf(s.stateDir, 'alpha', a), 0, MiB).equals(Buffer.alloc(MiB, 0xa1)), 'alpha\'s write after the point is gone');
  assert.ok(bytesOf(fileOf(s.stateDir, 'alpha', b), 8 * MiB, MiB).equals(Buffer.alloc(MiB)), 'alpha\'s write after the point is gone');

  // A backend's failover (Cinder's failover_host) takes a replicated group with it: its host and its replication status follow its members.
  await action(s, g, { enable_replication: {} }, 202);
  await waitFor('group replication enabled again', async () => (await group(s, g)).replication_status === 'enabled');
  const services = (await s.request('GET', `${V}/os-services?binary=cinder-volume`)).body.services as Array<{ host: string; replication_status: string }>;
  const alphaHost = services.find((x) => x.host.endsWith('@alpha'))!.host;
  const failover = (backend_id: string) => s.request('PUT', `${V}/os-services/failover_host`, { host: alphaHost, backend_id });
  assert.equal((await failover('beta')).status, 202);
  await waitFor('the group failed over with its backend', async () => (await group(s, g)).replication_status === 'failed-over');
  for (const id of [a, b]) assert.match((await volume(s, id))['os-vol-host-attr:host'], /@beta#/);
  await waitFor('copies back on alpha in step', async () => {
    for (const id of [a, b]) if (!['enabled', 'copying'].includes((await replication(s, id)).state)) return false;
    return true;
  });
  assert.equal((await failover('default')).status, 202);
  await waitFor('the group failed back with its backend', async () => (await group(s, g)).replication_status === 'enabled');
  for (const id of [a, b]) assert.match((await volume(s, id))['os-vol-host-attr:host'], /@alpha#/);
  // The group is on alpha again: its next point is a group point from alpha.
  assert.deepEqual(await action(s, g, { list_replication_targets: {} }, 200), { replication_targets: [{ backend_id: 'beta' }] });

  // Disable: the group and its members stop; a second disable is refused.
  await action(s, g, { disable_replication: {} }, 202);
  await waitFor('group replication disabled', async () => (await group(s, g)).replication_status === 'disabled');
  for (const id of [a, b]) assert.equal((await volume(s, id)).replication_status, 'disabled');
  assert.match((await action(s, g, { disable_replication: {} }, 400)).badRequest.message, /replication status must be enabled or error/);
});

test('python3-cinderclient drives group replication: enable, list targets, failover, failback, disable', async (t) => {
  const s = await startTestServer(t, { ini: REPLICATING_BACKENDS });
  const cinder = (...args: string[]): Promise<string> => noauthCinder(s, PROJECT, '--os-volume-api-version', '3.38', ...args);
  await post(s, '/types', { volume_type: { name: 'repl', extra_specs: REPLICATED } }, 200, {});
  await cinder('group-type-create', 'replicated');
  await cinder('group-type-key', 'replicated', 'set', 'consistent_group_replication_enabled=<is> True');
  const g = /\|\s*id\s*\|\s*(\S+)\s*\|/.exec(await cinder('group-create', '--name', 'db', 'replicated', 'repl'))![1]!;
  const ids: string[] = [];
  for (let i = 0; i < 2; i++) ids.push((await post(s, '/volumes', { volume: { size: 1, volume_type: 'repl', group_id: g } }, 202)).volume.id);
  for (const id of ids) await waitForStatus(s, id, 'available');
  const status = async (want: string) => waitFor(`group ${want}`, async () => new RegExp(`\\|\\s*replication_status\\s*\\|\\s*${want}\\s*\\|`).test(await cinder('group-show', g)));

  await cinder('group-enable-replication', g);
  await status('enabled');
  assert.match(await cinder('group-list-replication-targets', g), /beta/);
  await cinder('group-failover-replication', '--secondary-backend-id', 'beta', g);
  await status('failed-over');
  for (const id of ids) assert.match((await volume(s, id))['os-vol-host-attr:host'], /@beta#/);
  await cinder('group-failover-replication', '--secondary-backend-id', 'default', g);
  await status('enabled');
  for (const id of ids) assert.match((await volume(s, id))['os-vol-host-attr:host'], /@alpha#/);
  await cinder('group-disable-replication', g);
  await status('disabled');
});
