/** `basalt attach` / `basalt detach` on the volume's own host: a loop device an operator can use. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { loopAttached } from '../helpers/loop-attach.ts';
import { PROJECT, startTestServer } from '../helpers/server.ts';

const run = promisify(execFile);
const V = `/v3/${PROJECT}`;

test('basalt attach gives a loop device on the volume\'s host, or the NBD URI elsewhere; detach undoes it', async (t) => {
  const s = await startTestServer(t);
  const { vol, device, cli } = await loopAttached(t, s);
  assert.equal((await s.request('GET', `${V}/volumes/${vol}`)).body.volume.status, 'in-use');
  // The operator writes through the device; the bytes land in the volume file.
  await run('dd', ['if=/dev/zero', `of=${device}`, 'bs=4096', 'count=1', 'seek=10', 'conv=fsync', 'status=none']);
  fs.writeFileSync(path.join(os.tmpdir(), 'basalt-pattern'), Buffer.alloc(4096, 0x61));
  await run('dd', [`if=${path.join(os.tmpdir(), 'basalt-pattern')}`, `of=${device}`, 'bs=4096', 'seek=10', 'conv=fsync', 'status=none']);
  const fd = fs.openSync(path.join(s.stateDir, 'volumes', 'file', `volume-${vol}`), 'r');
  const b = Buffer.alloc(4096);
  fs.readSync(fd, b, 0, 4096, 40960);
  fs.closeSync(fd);
  assert.ok(b.equals(Buffer.alloc(4096, 0x61)));
  await run('mkfs.ext4', ['-q', '-F', device]);

  // A loop device's writes bypass the NBD export, so they cannot be quiesced: on a pool that
  // snapshots by copying (this ext4), a snapshot while in use is refused and nothing is made.
  const used = async () => (await s.request('GET', `${V}/os-quota-sets/${PROJECT}?usage=true`)).body.quota_set.snapshots.in_use as number;
  const before = await used();
  const refused = await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: vol, force: true } });
  assert.equal(refused.status, 400);
  assert.match(refused.body.badRequest.message, /attached as a local loop device.*snapshots by copying/);
  assert.equal((await s.request('GET', `${V}/snapshots`)).body.snapshots.length, 0);
  assert.equal(await used(), before);

  assert.match((await cli('detach', vol)).stdout, /detached/);
  assert.equal((await run('losetup', ['--associated', path.join(s.stateDir, 'volumes', 'file', `volume-${vol}`)])).stdout.trim(), '');
  assert.equal((await s.request('GET', `${V}/volumes/${vol}`)).body.volume.status, 'available');

  // From another host's point of view the same volume comes over NBD.
  const uri = (await cli('attach', vol, '--host', 'elsewhere')).stdout.trim();
  assert.match(uri, /^nbd:\/\/127\.0\.0\.1:\d+\/basalt-[0-9a-f]{48}$/);
  const info = JSON.parse((await run('nbdinfo', ['--json', uri])).stdout);
  assert.equal(info.exports[0]['export-size'], 1024 ** 3);
  // Attached over NBD, the same pool snapshots it in use: the export quiesces the writes.
  const snap = await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: vol, force: true } });
  assert.equal(snap.status, 202);
  await cli('detach', vol, '--all');
  assert.equal((await s.request('GET', `${V}/volumes/${vol}`)).body.volume.status, 'available');
  await assert.rejects(cli('attach', '00000000-0000-0000-0000-000000000000'), /no volume has the id or name/);
});
