/** Attachments API with the service's NBD export: real clients read and write through the connection info. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { connectExport } from '../helpers/nbd-raw.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const run = promisify(execFile);
const V = `/v3/${PROJECT}`;
const MV = { 'OpenStack-API-Version': 'volume 3.54' };
const CONNECTOR = { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.test', mode: 'rw' };

async function availableVolume(s: TestServer): Promise<string> {
  const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } });
  await waitForStatus(s, r.body.volume.id, 'available');
  return r.body.volume.id;
}

test('reserve, connect, complete, read and write over NBD, detach with fencing', async (t) => {
  const s = await startTestServer(t);
  const vol = await availableVolume(s);
  assert.equal((await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol } })).status, 404, 'attachments exist from 3.27');

  const reserved = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, instance_uuid: '11111111-2222-3333-4444-555555555555' } }, MV);
  assert.equal(reserved.status, 200, JSON.stringify(reserved.body));
  const att = reserved.body.attachment;
  assert.equal(att.status, 'reserved');
  assert.equal(att.connection_info, null, 'not connected yet: no connection info, as in Cinder');
  assert.deepEqual([att.attached_at, att.detached_at], ['', '']);
  assert.equal((await s.request('GET', `${V}/volumes/${vol}`)).body.volume.status, 'reserved');
  const second = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol } }, MV);
  assert.equal(second.status, 400, 'a volume without multiattach takes one attachment');

  const updated = await s.request('PUT', `${V}/attachments/${att.id}`, { attachment: { connector: CONNECTOR } }, MV);
  assert.equal(updated.status, 200);
  const info = updated.body.attachment.connection_info;
  assert.equal(info.driver_volume_type, 'nbd');
  assert.match(info.data.export_name, /^basalt-[0-9a-f]{48}$/);
  assert.equal(info.data.access_mode, 'rw');
  assert.equal((await s.request('GET', `${V}/volumes/${vol}`)).body.volume.status, 'attaching');

  assert.equal((await s.request('POST', `${V}/attachments/${att.id}/action`, { 'os-complete': null }, MV)).status, 204);
  const inUse = (await s.request('GET', `${V}/volumes/${vol}`, undefined, MV)).body.volume;
  assert.equal(inUse.status, 'in-use');
  assert.equal(inUse.attachments[0].attachment_id, att.id);
  assert.equal(inUse.attachments[0].host_name, 'compute-1');
  assert.equal((await s.request('POST', `${V}/volumes/${vol}/action`, { 'os-extend': { new_size: 2 } })).status, 400, 'in-use volumes do not extend (yet)');
  assert.equal((await s.request('DELETE', `${V}/volumes/${vol}`)).status, 400, 'attached volumes are not deleted');

  // A real client reads and writes through the connection info.
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 1M 64k', info.data.uri]);
  assert.doesNotMatch((await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x42 1M 64k', info.data.uri])).stdout, /verification failed/);
  const listed = (await s.request('GET', `${V}/attachments?volume_id=${vol}`, undefined, MV)).body.attachments;
  assert.deepEqual(listed, [{ id: att.id, status: 'attached', instance: '11111111-2222-3333-4444-555555555555', volume_id: vol }]);

  // Detach: the open connection is dropped and the export name stops working.
  const sock = await connectExport(info.data.host, info.data.port, info.data.export_name);
  const closed = new Promise((r) => sock.once('close', r));
  const del = await s.request('DELETE', `${V}/attachments/${att.id}`, undefined, MV);
  assert.equal(del.status, 200);
  assert.deepEqual(del.body, { attachments: [] });
  await closed;
  await assert.rejects(run('nbdinfo', [info.data.uri]), 'a deleted attachment\'s export is gone');
  const back = (await s.request('GET', `${V}/volumes/${vol}`, undefined, MV)).body.volume;
  assert.equal(back.status, 'available');
  assert.deepEqual(back.attachments, []);
  assert.equal((await s.request('GET', `${V}/attachments/${att.id}`, undefined, MV)).status, 404);
});

test('read-only attachments (3.54) refuse writes', async (t) => {
  const s = await startTestServer(t);
  const vol = await availableVolume(s);
  const a = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, connector: CONNECTOR, mode: 'ro' } }, MV);
  assert.equal(a.status, 200);
  assert.equal(a.body.attachment.status, 'attaching');
  const uri = a.body.attachment.connection_info.data.uri as string;
  assert.equal(a.body.attachment.connection_info.data.access_mode, 'ro');
  const r = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4096', uri]).catch((e: { stdout: string; stderr: string }) => e);
  assert.match(`${r.stdout}${r.stderr}`, /Operation not permitted|read-only|Permission denied/i);
  assert.match((await run('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0 0 4096', uri])).stdout, /read 4096\/4096/);
  const info = JSON.parse((await run('nbdinfo', ['--json', uri])).stdout);
  assert.equal(info.exports[0]['is_read_only'], true);
  assert.equal(info.exports[0]['export-size'], 1024 ** 3);
});

test('attachment bad input and scope', async (t) => {
  const s = await startTestServer(t);
  const vol = await availableVolume(s);
  assert.equal((await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: 'nope' } }, MV)).status, 400);
  assert.equal((await s.request('POST', `${V}/attachments`, { attachment: {} }, MV)).status, 400);
  assert.equal((await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: '00000000-0000-0000-0000-000000000000' } }, MV)).status, 404);
  assert.equal((await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, mode: 'rx' } }, MV)).status, 400);
  const a = (await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol } }, MV)).body.attachment;
  assert.equal((await s.request('POST', `${V}/attachments/${a.id}/action`, { 'os-complete': null }, MV)).status, 400, 'complete needs a connector first');
  const other = { 'X-Auth-Token': 'eve:elsewhere', 'OpenStack-API-Version': 'volume 3.54' };
  assert.equal((await s.request('GET', `/v3/elsewhere/attachments/${a.id}`, undefined, other)).status, 404);
  assert.equal((await s.request('DELETE', `${V}/attachments/${a.id}`, undefined, MV)).status, 200);
  await waitFor('available', async () => (await s.request('GET', `${V}/volumes/${vol}`)).body.volume.status === 'available');
});

test('multiattach: a type with multiattach="<is> True" gives several attachments, each its own export', async (t) => {
  const s = await startTestServer(t);
  assert.equal((await s.request('POST', `${V}/types`, { volume_type: { name: 'shared', extra_specs: { multiattach: '<is> True' } } })).status, 200);
  const created = await s.request('POST', `${V}/volumes`, { volume: { size: 1, volume_type: 'shared' } });
  const vol = created.body.volume.id;
  assert.equal(created.body.volume.multiattach, true);
  await waitForStatus(s, vol, 'available');
  assert.equal((await s.request('POST', `${V}/volumes`, { volume: { size: 1, multiattach: true } })).status, 400, 'multiattach comes from the type (3.50)');

  const uris: string[] = [];
  const ids: string[] = [];
  for (const host of ['compute-1', 'compute-2']) {
    const a = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, connector: { ...CONNECTOR, host } } }, MV);
    assert.equal(a.status, 200, JSON.stringify(a.body));
    assert.equal((await s.request('POST', `${V}/attachments/${a.body.attachment.id}/action`, { 'os-complete': null }, MV)).status, 204);
    uris.push(a.body.attachment.connection_info.data.uri);
    ids.push(a.body.attachment.id);
  }
  assert.notEqual(uris[0], uris[1], 'each attachment is its own export');
  const v = (await s.request('GET', `${V}/volumes/${vol}`, undefined, MV)).body.volume;
  assert.equal(v.status, 'in-use');
  assert.deepEqual(v.attachments.map((a: { host_name: string }) => a.host_name).sort(), ['compute-1', 'compute-2']);

  // Two clients write their own regions and each reads the other's.
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x01 0 64k', uris[0]!]);
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x02 1M 64k', uris[1]!]);
  assert.doesNotMatch((await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x02 1M 64k', uris[0]!])).stdout, /verification failed/);
  assert.doesNotMatch((await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x01 0 64k', uris[1]!])).stdout, /verification failed/);
  assert.equal(JSON.parse((await run('nbdinfo', ['--json', uris[0]!])).stdout).exports[0]['can_multi_conn'], true);

  await s.request('DELETE', `${V}/attachments/${ids[0]}`, undefined, MV);
  assert.equal((await s.request('GET', `${V}/volumes/${vol}`)).body.volume.status, 'in-use', 'still attached to the other host');
  await assert.rejects(run('nbdinfo', [uris[0]!]));
  await run('nbdinfo', [uris[1]!]);
  await s.request('DELETE', `${V}/attachments/${ids[1]}`, undefined, MV);
  assert.equal((await s.request('GET', `${V}/volumes/${vol}`)).body.volume.status, 'available');
});

test('in-use extend (3.42): the volume grows and new connections see the new size', async (t) => {
  const s = await startTestServer(t);
  const vol = await availableVolume(s);
  const a = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, connector: CONNECTOR } }, MV);
  await s.request('POST', `${V}/attachments/${a.body.attachment.id}/action`, { 'os-complete': null }, MV);
  const uri = a.body.attachment.connection_info.data.uri as string;
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 0 64k', uri]);
  assert.equal((await s.request('POST', `${V}/volumes/${vol}/action`, { 'os-extend': { new_size: 2 } }, { 'OpenStack-API-Version': 'volume 3.41' })).status, 400);
  assert.equal((await s.request('POST', `${V}/volumes/${vol}/action`, { 'os-extend': { new_size: 2 } }, { 'OpenStack-API-Version': 'volume 3.42' })).status, 202);
  await waitFor('extended and in-use', async () => {
    const v = (await s.request('GET', `${V}/volumes/${vol}`)).body.volume;
    return v.status === 'in-use' && v.size === 2;
  });
  assert.equal(JSON.parse((await run('nbdinfo', ['--json', uri])).stdout).exports[0]['export-size'], 2 * 1024 ** 3);
  assert.doesNotMatch((await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x33 0 64k', '-c', 'read -P 0 1G 64k', uri])).stdout, /verification failed/);
});

test('snapshot of an in-use volume needs force and holds the data written before it', async (t) => {
  const s = await startTestServer(t);
  const vol = await availableVolume(s);
  const a = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, connector: CONNECTOR } }, MV);
  await s.request('POST', `${V}/attachments/${a.body.attachment.id}/action`, { 'os-complete': null }, MV);
  const uri = a.body.attachment.connection_info.data.uri as string;
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 2M 64k', uri]);
  assert.equal((await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: vol } })).status, 400, 'in-use needs force');
  const snap = await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: vol, force: true } });
  assert.equal(snap.status, 202);
  await waitFor('snapshot', async () => (await s.request('GET', `${V}/snapshots/${snap.body.snapshot.id}`)).body.snapshot.status === 'available');
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x78 2M 64k', uri]);
  const copy = await s.request('POST', `${V}/volumes`, { volume: { size: 1, snapshot_id: snap.body.snapshot.id } });
  await waitForStatus(s, copy.body.volume.id, 'available');
  const b = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: copy.body.volume.id, connector: CONNECTOR, mode: 'ro' } }, MV);
  assert.doesNotMatch((await run('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x77 2M 64k', b.body.attachment.connection_info.data.uri])).stdout, /verification failed/);
});

test('the older action API: reserve, initialize_connection, attach, begin/roll detaching, detach, unreserve', async (t) => {
  const s = await startTestServer(t);
  const vol = await availableVolume(s);
  const act = (body: unknown) => s.request('POST', `${V}/volumes/${vol}/action`, body);
  const status = async () => (await s.request('GET', `${V}/volumes/${vol}`)).body.volume.status;

  assert.equal((await act({ 'os-reserve': {} })).status, 202);
  assert.equal(await status(), 'attaching', 'os-reserve sets attaching, as in Cinder');
  assert.equal((await act({ 'os-unreserve': {} })).status, 202);
  assert.equal(await status(), 'available');

  assert.equal((await act({ 'os-reserve': {} })).status, 202);
  const init = await act({ 'os-initialize_connection': { connector: CONNECTOR } });
  assert.equal(init.status, 200);
  assert.equal(init.body.connection_info.driver_volume_type, 'nbd');
  assert.equal(await status(), 'attaching');
  assert.equal((await act({ 'os-attach': { instance_uuid: '11111111-2222-3333-4444-555555555555', mountpoint: '/dev/vdb' } })).status, 202);
  const v = (await s.request('GET', `${V}/volumes/${vol}`)).body.volume;
  assert.equal(v.status, 'in-use');
  assert.equal(v.attachments[0].device, '/dev/vdb');
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 9 0 4096', init.body.connection_info.data.uri]);

  assert.equal((await act({ 'os-begin_detaching': {} })).status, 202);
  assert.equal(await status(), 'detaching');
  assert.equal((await act({ 'os-roll_detaching': {} })).status, 202);
  assert.equal(await status(), 'in-use');
  assert.equal((await act({ 'os-begin_detaching': {} })).status, 202);
  assert.equal((await act({ 'os-terminate_connection': { connector: CONNECTOR } })).status, 202);
  assert.equal((await act({ 'os-detach': { attachment_id: v.attachments[0].attachment_id } })).status, 202);
  assert.equal(await status(), 'available');
  await assert.rejects(run('nbdinfo', [init.body.connection_info.data.uri]));

  assert.equal((await act({ 'os-initialize_connection': {} })).status, 400, 'a connector is required');
  assert.equal((await act({ 'os-attach': {} })).status, 400, 'nothing to attach');
  const member = { 'X-Auth-Token': 'alice:proj-a' };
  const mine = (await s.request('POST', '/v3/proj-a/volumes', { volume: { size: 1 } }, member)).body.volume.id;
  await waitFor('available', async () => (await s.request('GET', `/v3/proj-a/volumes/${mine}`, undefined, member)).body.volume.status === 'available');
  assert.equal((await s.request('POST', `/v3/proj-a/volumes/${mine}/action`, { 'os-force_detach': {} }, member)).status, 403);
});

test('issue 13 defect 11: concurrent os-attach on a volume that is not multiattach completes exactly one attachment, whole', async (t) => {
  const s = await startTestServer(t);
  const vol = await availableVolume(s);
  const act = (body: unknown) => s.request('POST', `${V}/volumes/${vol}/action`, body);
  assert.equal((await act({ 'os-reserve': {} })).status, 202);
  assert.equal((await act({ 'os-initialize_connection': { connector: CONNECTOR } })).status, 200);

  const callers = Array.from({ length: 8 }, (_, i) => ({
    instance_uuid: `11111111-2222-3333-4444-00000000000${i}`, mountpoint: `/dev/vd${'bcdefghi'[i]}`, host_name: `compute-${i}`,
  }));
  const answers = await Promise.all(callers.map((c) => act({ 'os-attach': c })));
  const won = answers.flatMap((r, i) => (r.status === 202 ? [callers[i]!] : []));
  assert.equal(won.length, 1, `one os-attach wins: ${answers.map((r) => r.status).join(' ')}`);
  for (const r of answers.filter((x) => x.status !== 202)) {
    assert.equal(r.status, 400);
    assert.match(r.body.badRequest.message, /already attached/);
  }
  const v = (await s.request('GET', `${V}/volumes/${vol}`)).body.volume;
  assert.equal(v.status, 'in-use');
  assert.equal(v.attachments.length, 1);
  // The row is the winner's, every field of it: no field from a losing call.
  assert.equal(v.attachments[0].server_id, won[0]!.instance_uuid);
  assert.equal(v.attachments[0].device, won[0]!.mountpoint);
  assert.equal(v.attachments[0].host_name, won[0]!.host_name);
  const rows = await s.server.db.kysely.selectFrom('attachments').selectAll().where('volume_id', '=', vol).execute();
  assert.equal(rows.length, 1);
  assert.equal(rows[0]!.attach_status, 'attached');
  assert.ok(rows[0]!.attach_time);

  // The winner repeating itself is a success (as in Cinder); nothing changes.
  assert.equal((await act({ 'os-attach': won[0] })).status, 202);
  assert.equal((await s.request('GET', `${V}/volumes/${vol}`)).body.volume.attachments.length, 1);
});

test('concurrent os-initialize_connection and os-detach calls on one volume settle it without a 404 or a second attachment', async (t) => {
  const s = await startTestServer(t);
  const vol = await availableVolume(s);
  const act = (body: unknown) => s.request('POST', `${V}/volumes/${vol}/action`, body);
  assert.equal((await act({ 'os-reserve': {} })).status, 202);
  // Several hosts' agents asking for the connection at once: one pending attachment serves them all.
  const inits = await Promise.all(Array.from({ length: 6 }, () => act({ 'os-initialize_connection': { connector: CONNECTOR } })));
  assert.deepEqual(inits.map((r) => r.status), inits.map(() => 200), inits.map((r) => JSON.stringify(r.body)).join(' '));
  const rows = await s.server.db.kysely.selectFrom('attachments').selectAll().where('volume_id', '=', vol).execute();
  assert.equal(rows.length, 1, 'one attachment');
  assert.equal(new Set(inits.map((r) => r.body.connection_info.data.export_name)).size, 1, 'every caller got its export');
  assert.equal((await act({ 'os-attach': { instance_uuid: '11111111-2222-3333-4444-555555555555', mountpoint: '/dev/vdb', host_name: 'compute-1' } })).status, 202);
  // Detaches racing each other: each finds the attachment gone or removes it; none is a 404.
  const detaches = await Promise.all(Array.from({ length: 6 }, () => act({ 'os-detach': {} })));
  assert.deepEqual(detaches.map((r) => r.status), detaches.map(() => 202), detaches.map((r) => JSON.stringify(r.body)).join(' '));
  const v = (await s.request('GET', `${V}/volumes/${vol}`)).body.volume;
  assert.equal(v.status, 'available');
  assert.deepEqual(v.attachments, []);
});

test('require_tls: clients use the TLS-PSK credentials from the connection info', async (t) => {
  const s = await startTestServer(t, { env: { BASALT_NBD_REQUIRE_TLS: 'true' } });
  const vol = await availableVolume(s);
  const a = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, connector: CONNECTOR } }, MV);
  const data = a.body.attachment.connection_info.data;
  assert.equal(data.tls.required, true);
  assert.match(data.tls.psk_key, /^[0-9a-f]{64}$/);
  const pskFile = `${s.stateDir}/client.psk`;
  (await import('node:fs')).writeFileSync(pskFile, `${data.tls.psk_identity}:${data.tls.psk_key}\n`);
  const uri = `nbds://${data.tls.psk_identity}@${data.host}:${data.port}/${data.export_name}?tls-psk-file=${pskFile}`;
  const info = JSON.parse((await run('nbdinfo', ['--json', uri])).stdout);
  assert.equal(info.TLS, true);
  await assert.rejects(run('nbdinfo', [data.uri]), 'plain NBD is refused');
  await s.request('DELETE', `${V}/attachments/${a.body.attachment.id}`, undefined, MV);
  await assert.rejects(run('nbdinfo', [uri]), 'a deleted attachment\'s key no longer works');
});
