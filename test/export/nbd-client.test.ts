/**
 * The NBD client (src/export/nbd-client.ts) against Basalt's own export on
 * each plane (native threads, event loop, TLS-PSK) and against qemu-nbd:
 * what it writes is in the file, what it reads is the file's, block status
 * matches the file's holes, errors carry the server's NBD error, and a lost
 * connection fails what was in flight instead of hanging.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { DriverError } from '../../src/errors/index.ts';
import { NbdClient } from '../../src/export/nbd-client.ts';
import { nbdErrorOf } from '../../src/export/nbd-protocol.ts';
import { PLANES, startNbd } from '../helpers/nbd-export.ts';
import { freePort } from '../helpers/net.ts';

const MiB = 1024 * 1024;

for (const plane of PLANES) {
  test(`on Basalt's ${plane} plane: writes, reads, zeros, trims and block status match the volume's file`, async (t) => {
    const nbd = await startNbd(t, { plane, volumes: [{ name: 'v', sizeGiB: 1 }] });
    const c = await NbdClient.connect({
      host: '127.0.0.1', port: nbd.port, exportName: 'v', ...(nbd.psk('v') ? { psk: nbd.psk('v')! } : {}), ...(nbd.socketPath ? { socketPath: nbd.socketPath } : {}),
    });
    t.after(() => c.close());
    assert.equal(c.sizeBytes, 1024 * MiB);
    const data = randomBytes(3 * MiB);
    // Larger than one request may carry on some servers: the client splits it; requests run pipelined.
    await Promise.all([c.write(4 * MiB, data), c.write(100 * MiB, Buffer.alloc(64 * 1024, 7))]);
    await c.writeZeroes!(4 * MiB + 4096, 4096, false);
    await c.flush();
    const file = fs.readFileSync(nbd.file('v'));
    const expected = Buffer.from(data);
    expected.fill(0, 4096, 8192);
    assert.ok(file.subarray(4 * MiB, 7 * MiB).equals(expected), 'the file holds what was written');
    assert.ok((await c.read(4 * MiB, 3 * MiB)).equals(expected), 'the client reads it back');
    const extents = await c.blockStatus!(0, 8 * MiB);
    assert.equal(extents.reduce((n, e) => n + e.length, 0), 8 * MiB);
    assert.equal(extents[0]!.hole, true, 'the start of the volume is a hole');
    assert.ok(extents.some((e) => !e.hole), 'the written range is data');
    await c.trim!(100 * MiB, 64 * 1024);
    await c.flush();
  });
}

test('a refused export, a write past the end and a lost connection are errors that say so', async (t) => {
  const nbd = await startNbd(t, { plane: 'event-loop', volumes: [{ name: 'v', sizeGiB: 1 }] });
  await assert.rejects(NbdClient.connect({ host: '127.0.0.1', port: nbd.port, exportName: 'nothing' }), (err: Error) => err instanceof DriverError && /export refused/.test(err.message));
  const c = await NbdClient.connect({ host: '127.0.0.1', port: nbd.port, exportName: 'v' });
  await assert.rejects(c.write(1024 * MiB - 512, Buffer.alloc(4096)), (err: Error) => {
    assert.ok(err instanceof DriverError, String(err));
    assert.match(err.message, /WRITE of 4096 bytes at .* failed with (EINVAL|ENOSPC)/);
    assert.ok(nbdErrorOf(err) !== 5, 'an export relaying it answers the same error, not EIO');
    return true;
  });
  // The server fences the export: what was in flight fails, retryably, and so does what comes after.
  const reads = Promise.allSettled(Array.from({ length: 8 }, (_, i) => c.read(i * MiB, MiB)));
  await nbd.server.closeExport('v');
  const settled = [...await reads, ...await Promise.allSettled([c.read(0, 4096)])];
  const failures = settled.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason as DriverError);
  assert.ok(failures.length >= 1, 'the read after the fence fails');
  for (const f of failures) assert.ok(f instanceof DriverError && f.retryable, String(f));
  await c.close();
});

test('against qemu-nbd: the client reads and writes a file another NBD server exports', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-nbd-client-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'disk.raw');
  fs.writeFileSync(file, '');
  fs.truncateSync(file, 64 * MiB);
  const port = await freePort();
  const qemu = spawn('qemu-nbd', ['-f', 'raw', '-x', 'disk', '-b', '127.0.0.1', '-p', String(port), '--persistent', '--shared', '4', file], { stdio: 'ignore' });
  t.after(() => qemu.kill('SIGKILL'));
  let c: NbdClient | undefined;
  for (let tries = 0; !c; tries++) {
    try {
      c = await NbdClient.connect({ host: '127.0.0.1', port, exportName: 'disk' });
    } catch (err) {
      if (tries > 100) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  t.after(() => c!.close());
  assert.equal(c.sizeBytes, 64 * MiB);
  const data = randomBytes(MiB);
  await c.write(8 * MiB, data);
  await c.flush();
  assert.ok(fs.readFileSync(file).subarray(8 * MiB, 9 * MiB).equals(data));
  assert.ok((await c.read(8 * MiB, MiB)).equals(data));
  const extents = await c.blockStatus!(0, 16 * MiB);
  assert.ok(extents.length >= 2 && extents[0]!.hole, JSON.stringify(extents));
});
