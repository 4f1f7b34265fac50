/**
 * Incremental backups from changed blocks (issue 15, part 3), the other write
 * paths (changed-blocks.test.ts has the NBD planes, a kill -9 and reflink
 * pools): a loop-device attachment and a revert write past the export, so the
 * next incremental backup reads everything; the changed blocks survive a clean
 * restart with the volume attached; the TLS plane tracks what nbdcopy wrote.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileDigest } from '../helpers/file-digest.ts';
import { openExport, simpleRequest } from '../helpers/nbd-raw.ts';
import { PROJECT, startTestServer, tempStateDir, testDatabase, waitFor, waitForStatus } from '../helpers/server.ts';
import { BIN, CONNECTOR, type Call, DATA, GiB, MV, MiB, V, attach, backup, bytesRead, detach, restoredDigest, run, volumeFile, volumeWithData } from '../helpers/changed-blocks.ts';

test('a loop-device attachment writes past the export: once detached, the next incremental backup reads everything', { timeout: 180_000 }, async (t) => {
  const lines: string[] = [];
  const s = await startTestServer(t, { logLines: lines });
  const call: Call = (m, p, b, h) => s.request(m, p, b, h);
  const vol = await volumeWithData(call, s.stateDir);
  await backup(call, { volume_id: vol });
  const cli = (...args: string[]) => run(process.execPath, [BIN, ...args, '--url', s.url, '--project', PROJECT]);
  const device = (await cli('attach', vol)).stdout.trim();
  assert.match(device, /^\/dev\/loop\d+$/);
  t.after(() => run('losetup', ['-d', device]).catch(() => undefined));
  const pattern = path.join(s.stateDir, 'pattern');
  fs.writeFileSync(pattern, Buffer.alloc(4096, 0x61));
  await run('dd', [`if=${pattern}`, `of=${device}`, 'bs=4096', 'seek=2560', 'conv=fsync', 'status=none']);
  assert.match((await cli('detach', vol)).stdout, /detached/);
  const inc = await backup(call, { volume_id: vol, incremental: true });
  assert.ok(bytesRead(lines, inc.id) >= DATA, 'the loop device\'s writes were not recorded: everything is read');
  assert.equal(await restoredDigest(call, s.stateDir, inc.id), await fileDigest(volumeFile(s.stateDir, vol), GiB));
});

test('a revert to a snapshot writes past the export: the next incremental backup reads everything', { timeout: 180_000 }, async (t) => {
  const lines: string[] = [];
  const s = await startTestServer(t, { logLines: lines });
  const call: Call = (m, p, b, h) => s.request(m, p, b, h);
  const vol = await volumeWithData(call, s.stateDir);
  const snap = await call('POST', `${V}/snapshots`, { snapshot: { volume_id: vol } });
  await waitFor('snapshot', async () => (await call('GET', `${V}/snapshots/${snap.body.snapshot.id}`)).body.snapshot.status === 'available');
  const a = await attach(call, vol);
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x55 2M 1M', a.uri]);
  await detach(call, vol, a.id);
  await backup(call, { volume_id: vol });
  assert.equal((await call('POST', `${V}/volumes/${vol}/action`, { revert: { snapshot_id: snap.body.snapshot.id } }, { 'OpenStack-API-Version': 'volume 3.40' })).status, 202);
  await waitForStatus(s, vol, 'available');
  const inc = await backup(call, { volume_id: vol, incremental: true });
  assert.ok(bytesRead(lines, inc.id) >= DATA, 'after the revert, everything is read');
  assert.equal(await restoredDigest(call, s.stateDir, inc.id), await fileDigest(volumeFile(s.stateDir, vol), GiB), 'and the backup holds the reverted data');
});

test('the changed blocks survive a clean restart with the volume attached: the next incremental backup still reads only them', { timeout: 180_000 }, async (t) => {
  const stateDir = tempStateDir(t);
  const database = await testDatabase(stateDir);
  const first = await startTestServer(t, { stateDir, env: database.env });
  const call1: Call = (m, p, b, h) => first.request(m, p, b, h);
  const vol = await volumeWithData(call1, stateDir);
  await backup(call1, { volume_id: vol });
  const a = await attach(call1, vol);
  // A client still connected when the server stops.
  const info = (await call1('GET', `${V}/attachments/${a.id}`, undefined, MV)).body.attachment.connection_info.data;
  const c = await openExport(info.host, info.port, info.export_name);
  t.after(() => c.sock.destroy());
  assert.equal((await simpleRequest(c, 1 /* WRITE */, BigInt(20 * MiB), 4096, Buffer.alloc(4096, 0x66))).error, 0);
  await first.close(); // the connection is dropped, its handle closed, the bits saved clean

  const lines: string[] = [];
  const second = await startTestServer(t, { stateDir, env: database.env, logLines: lines });
  const call2: Call = (m, p, b, h) => second.request(m, p, b, h);
  await detach(call2, vol, a.id);
  const inc = await backup(call2, { volume_id: vol, incremental: true });
  const read = bytesRead(lines, inc.id);
  assert.ok(read > 0 && read <= 4 * MiB, `after a clean restart the incremental backup read ${read} bytes`);
  assert.equal(await restoredDigest(call2, stateDir, inc.id), await fileDigest(volumeFile(stateDir, vol), GiB));
});

test('TLS plane: an incremental backup reads only the blocks nbdcopy wrote over TLS-PSK since its parent', { timeout: 180_000 }, async (t) => {
  const lines: string[] = [];
  const s = await startTestServer(t, { logLines: lines, env: { BASALT_NBD_REQUIRE_TLS: 'true' } });
  const call: Call = (m, p, b, h) => s.request(m, p, b, h);
  const vol = await volumeWithData(call, s.stateDir);
  await backup(call, { volume_id: vol });
  const a = await call('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, connector: CONNECTOR } }, MV);
  const data = a.body.attachment.connection_info.data;
  assert.equal(data.tls.required, true);
  const pskFile = path.join(s.stateDir, 'client.psk');
  fs.writeFileSync(pskFile, `${data.tls.psk_identity}:${data.tls.psk_key}\n`);
  const source = path.join(s.stateDir, 'source.raw');
  fs.writeFileSync(source, randomBytes(64 * 1024));
  await run('nbdcopy', [source, `nbds://${data.tls.psk_identity}@${data.host}:${data.port}/${data.export_name}?tls-psk-file=${pskFile}`]);
  await detach(call, vol, a.body.attachment.id);
  const inc = await backup(call, { volume_id: vol, incremental: true });
  const read = bytesRead(lines, inc.id);
  assert.ok(read > 0 && read <= 4 * MiB, `the incremental backup read ${read} bytes`);
  assert.equal(await restoredDigest(call, s.stateDir, inc.id), await fileDigest(volumeFile(s.stateDir, vol), GiB));
});
