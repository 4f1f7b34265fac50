/**
 * The compatibility oracle: Debian's python3-cinderclient in noauth mode drives
 * create, list, show, extend (the file grows), metadata and delete.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { noauthCinder } from '../helpers/openstack-clients.ts';
import { startTestServer, waitFor, type TestServer } from '../helpers/server.ts';

const PROJECT = 'cafe0000000000000000000000000001';

const cinder = (s: TestServer, ...args: string[]): Promise<string> => noauthCinder(s, PROJECT, ...args);

/** Reads a `cinder show`-style property table into an object. */
function table(out: string): Record<string, string> {
  const props: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^\|\s*(\S[^|]*?)\s*\|\s*(.*?)\s*\|$/.exec(line);
    if (m && m[1] !== 'Property') props[m[1]!] = m[2]!;
  }
  return props;
}

test('python3-cinderclient: create, list, show, extend, metadata, delete', async (t) => {
  assert.ok(fs.existsSync('/usr/bin/cinder'), 'python3-cinderclient is installed by scripts/install-test-tools.sh');
  const s = await startTestServer(t);
  const created = table(await cinder(s, 'create', '--name', 'oracle', '--metadata', 'team=storage', '1'));
  const id = created.id!;
  assert.match(id, /^[0-9a-f-]{36}$/);
  assert.equal(created.name, 'oracle');

  await waitFor('available', async () => table(await cinder(s, 'show', id)).status === 'available');
  const list = await cinder(s, 'list');
  assert.match(list, new RegExp(`${id} \\| available \\| oracle \\| 1 `));

  await cinder(s, 'extend', id, '2');
  const shown = await waitFor('extended', async () => {
    const p = table(await cinder(s, 'show', id));
    return p.status === 'available' && p.size === '2' ? p : undefined;
  });
  assert.match(shown.metadata!, /team.*storage/);
  const file = path.join(s.stateDir, 'volumes', 'file', `volume-${id}`);
  assert.equal(fs.statSync(file).size, 2 * 1024 ** 3, 'the volume file grew');

  await cinder(s, 'metadata', id, 'set', 'tier=gold', 'zone=a');
  let md = table(await cinder(s, 'metadata-show', id));
  assert.equal(md.tier, 'gold');
  await cinder(s, 'metadata', id, 'unset', 'zone');
  md = table(await cinder(s, 'metadata-show', id));
  assert.equal(md.zone, undefined);
  assert.match(await cinder(s, 'list', '--metadata', 'tier=gold'), new RegExp(id));
  assert.doesNotMatch(await cinder(s, 'list', '--metadata', 'tier=silver'), new RegExp(id));

  assert.match(await cinder(s, 'service-list'), /cinder-volume .*\| up /);
  assert.match(await cinder(s, 'absolute-limits'), /totalVolumesUsed\s*\|\s*1/);

  await cinder(s, 'delete', id);
  await waitFor('deleted', async () => !(await cinder(s, 'list')).includes(id));
  assert.equal(fs.existsSync(file), false);
});

test('python3-cinderclient: types with extra specs, zones, snapshots, copies, quotas', async (t) => {
  const s = await startTestServer(t, { ini: '[DEFAULT]\nenabled_backends = main, edge\n[edge]\nbackend_availability_zone = edge-zone\n' });
  assert.match(await cinder(s, 'type-create', 'gold'), /\| gold\s+\|/);
  await cinder(s, 'type-key', 'gold', 'set', 'volume_backend_name=edge');
  assert.match(await cinder(s, 'extra-specs-list'), /gold.*volume_backend_name.*edge/);

  // A typed volume in a zone lands on the backend the type and zone select.
  const inZone = table(await cinder(s, '--os-volume-api-version', '3.62', 'create', '--volume-type', 'gold', '--availability-zone', 'edge-zone', '--name', 'edgy', '1'));
  const vid = inZone.id!;
  const shown = await waitFor('available', async () => {
    const p = table(await cinder(s, 'show', vid));
    return p.status === 'available' ? p : undefined;
  });
  assert.equal(shown.availability_zone, 'edge-zone');
  assert.equal(shown.volume_type, 'gold');
  assert.match(shown['os-vol-host-attr:host']!, /@edge#edge$/);

  // Snapshot, list, a volume from it, a clone.
  const snap = table(await cinder(s, 'snapshot-create', '--name', 'snap', vid));
  await waitFor('snapshot available', async () => table(await cinder(s, 'snapshot-show', snap.id!)).status === 'available');
  assert.match(await cinder(s, 'snapshot-list'), new RegExp(`${snap.id} \\| ${vid} \\| available`));
  const fromSnap = table(await cinder(s, 'create', '--snapshot-id', snap.id!, '2'));
  const clone = table(await cinder(s, 'create', '--source-volid', vid, '1'));
  for (const id of [fromSnap.id!, clone.id!]) {
    await waitFor(`${id} available`, async () => table(await cinder(s, 'show', id)).status === 'available');
  }
  assert.equal(table(await cinder(s, 'show', fromSnap.id!)).snapshot_id, snap.id);
  assert.equal(table(await cinder(s, 'show', clone.id!)).source_volid, vid);

  // Quotas.
  await cinder(s, 'quota-update', '--volumes', '7', '--gigabytes', '50', PROJECT);
  const quota = table(await cinder(s, 'quota-show', PROJECT));
  assert.equal(quota.volumes, '7');
  assert.equal(quota.gigabytes, '50');
  await cinder(s, 'quota-update', '--volume-type', 'gold', '--volumes', '5', PROJECT);
  assert.equal(table(await cinder(s, 'quota-show', PROJECT)).volumes_gold, '5');
  assert.match(await cinder(s, 'quota-usage', PROJECT), /\| volumes\s+\| 3\s+\|/);

  await cinder(s, 'snapshot-delete', snap.id!);
  await waitFor('snapshot deleted', async () => !(await cinder(s, 'snapshot-list')).includes(snap.id!));
  for (const id of [fromSnap.id!, clone.id!, vid]) await cinder(s, 'delete', id);
  await waitFor('volumes deleted', async () => !(await cinder(s, 'list')).includes(vid));
  await cinder(s, 'type-delete', 'gold');
  assert.doesNotMatch(await cinder(s, 'type-list'), /gold/);
});

test('python3-cinderclient: attachment create, list, complete, delete', async (t) => {
  const s = await startTestServer(t);
  const vol = table(await cinder(s, 'create', '1')).id!;
  await waitFor('available', async () => table(await cinder(s, 'show', vol)).status === 'available');

  const att = table(await cinder(s, '--os-volume-api-version', '3.54', 'attachment-create', '--connect', 'True', '--host', 'compute-9', '--ip', '127.0.0.1', '--initiator', 'iqn.x', vol, '11111111-2222-3333-4444-555555555555'));
  assert.equal(att.status, 'attaching');
  assert.equal(att.driver_volume_type, 'nbd', 'the connection info table follows');
  assert.match(await cinder(s, '--os-volume-api-version', '3.54', 'attachment-list'), new RegExp(att.id!));
  await cinder(s, '--os-volume-api-version', '3.54', 'attachment-complete', att.id!);
  assert.equal(table(await cinder(s, 'show', vol)).status, 'in-use');
  await cinder(s, '--os-volume-api-version', '3.54', 'attachment-delete', att.id!);
  assert.equal(table(await cinder(s, 'show', vol)).status, 'available');
});

test('python3-cinderclient: work-cleanup names a dead member of a live cluster as cleaned', async (t) => {
  const s = await startTestServer(t);
  const live = await waitFor('the volume service row', async () => (await s.server.db.kysely.selectFrom('services').selectAll().where('binary', '=', 'cinder-volume').executeTakeFirst()));
  // A member of the same cluster that stopped heartbeating long ago (its process is gone).
  await s.server.db.kysely.insertInto('services').values({
    ...live, id: 'dead0000-0000-4000-8000-000000000001', host: 'ghost@file', instance_id: 'gone', heartbeat_ms: 0, heartbeat_at: '1970-01-01T00:00:00.000Z',
  }).execute();
  const out = await cinder(s, '--os-volume-api-version', '3.24', 'work-cleanup', '--cluster', live.cluster!);
  assert.match(out, /Following services will be cleaned/);
  const hosts = [...out.matchAll(/^\|\s*[0-9a-f-]{36}\s*\|[^|]*\|\s*(\S+)\s*\|\s*cinder-volume\s*\|$/gm)].map((m) => m[1]);
  assert.deepEqual(hosts, ['ghost@file'], 'only the dead member is cleaned');
});
