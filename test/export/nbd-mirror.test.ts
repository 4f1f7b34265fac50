/**
 * A synchronous mirror served by the native data plane (native/nbd_mirror.c,
 * issue 16): a volume whose export serves a LiveMove to a copy reachable by
 * plain connections (another server's Unix socket) is written by the native
 * threads on both sides, never through the event loop's handle, and a write
 * is acknowledged only once the copy has it. Overlapping writes from several
 * connections, and the mirror's first copy running beside them, leave the two
 * copies alike; a copy that refuses a write (full) fails it with its errno and
 * says so once.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { test, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import { FileDriver, GuardedDriver, type VolumeHandle } from '../../src/drivers/index.ts';
import { NbdClient } from '../../src/export/nbd-client.ts';
import { LiveMove } from '../../src/volume/live-move.ts';
import { startNbd, type NbdFixture } from '../helpers/nbd-export.ts';
import { requestFrame } from '../helpers/nbd-raw.ts';
import { waitFor } from '../helpers/server.ts';
import { fill, smallFilesystem, unmountAfter } from '../helpers/small-filesystem.ts';

const run = promisify(execFile);
const MiB = 1024 ** 2;

const digest = (file: string): string => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

interface Mirrored {
  primary: NbdFixture;
  copy: NbdFixture;
  move: LiveMove;
  /** Writes, zeros and trims that reached the source through the event loop's handle. */
  viaEventLoop: () => number;
  failures: Error[];
}

/** A primary export serving a mirror of its volume onto `copy`'s volume `c`, natively when `native`. */
async function mirrored(t: TestContext, copy: NbdFixture, o: { native: boolean; prefill?: Buffer }): Promise<Mirrored> {
  let move: LiveMove | undefined;
  const primary = await startNbd(t, { plane: 'unix', volumes: [{ name: 'v', sizeGiB: 1 }], open: () => move && Promise.resolve(move.view()) });
  const driver = new GuardedDriver(new FileDriver({ poolName: 'p', directory: primary.dir, totalCapacityGiB: 0 }), 60_000);
  await driver.init();
  const source = await driver.openVolume({ id: primary.ids.get('v')!, sizeGiB: 1 });
  if (o.prefill) await source.write(0, o.prefill);
  let calls = 0;
  const counted: VolumeHandle = {
    ...source,
    write: (offset, data) => { calls++; return source.write(offset, data); },
    writeZeroes: (offset, length, mayPunch) => { calls++; return source.writeZeroes!(offset, length, mayPunch); },
    trim: (offset, length) => { calls++; return source.trim!(offset, length); },
  };
  const at = { socketPath: copy.socketPath!, host: '127.0.0.1', port: 0, exportName: 'c' };
  const dest = await NbdClient.connect(at);
  const failures: Error[] = [];
  move = new LiveMove(counted, dest, (err) => failures.push(err as Error), o.native ? { connect: () => NbdClient.connectPlain(at) } : undefined);
  t.after(() => move!.close());
  return { primary, copy, move, viaEventLoop: () => calls, failures };
}

test('the native threads write both copies; the event loop never sees a write', async (t) => {
  const copy = await startNbd(t, { plane: 'unix', volumes: [{ name: 'c', sizeGiB: 1 }] });
  const m = await mirrored(t, copy, { native: true });
  const uri = m.primary.uri('v');
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 1M', '-c', 'write -P 0x11 4095 3', '-c', 'write -z 1536k 64k',
    '-c', 'write -P 0x22 8M 4k', '-c', 'discard 8M 4k', '-c', 'write -P 0x33 20M 64k', '-c', 'flush', uri]);
  assert.equal(m.viaEventLoop(), 0, 'served by the native threads');
  for (const f of [m.primary.file('v'), copy.file('c')]) {
    const b = fs.readFileSync(f);
    assert.ok(b.subarray(MiB, MiB + 512 * 1024).equals(Buffer.alloc(512 * 1024, 0x5a)), f);
    assert.ok(b.subarray(1536 * 1024, 1600 * 1024).equals(Buffer.alloc(64 * 1024)), `zeroed on ${f}`);
    assert.ok(b.subarray(20 * MiB, 20 * MiB + 65536).equals(Buffer.alloc(65536, 0x33)), f);
    assert.ok(b.subarray(4095, 4098).equals(Buffer.alloc(3, 0x11)), f);
  }
  assert.equal(digest(m.primary.file('v')), digest(copy.file('c')), 'the copies are alike');
  assert.deepEqual(m.failures, []);
});

test('without plain connections to the copy the mirror is served on the event loop, alike', async (t) => {
  const copy = await startNbd(t, { plane: 'unix', volumes: [{ name: 'c', sizeGiB: 1 }] });
  const m = await mirrored(t, copy, { native: false });
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 1M', m.primary.uri('v')]);
  assert.ok(m.viaEventLoop() > 0);
  assert.equal(digest(m.primary.file('v')), digest(copy.file('c')));
});

test('overlapping writes from several connections, with the first copy running beside them, leave the copies alike', async (t) => {
  const copy = await startNbd(t, { plane: 'unix', volumes: [{ name: 'c', sizeGiB: 1 }] });
  // The source holds data the copy lacks: the first copy must bring it over while the writes go on.
  const prefill = Buffer.alloc(16 * MiB);
  for (let i = 0; i < prefill.length; i += 4096) prefill.fill(i / 4096 % 251, i, i + 4096);
  const m = await mirrored(t, copy, { native: true, prefill });
  const clients = await Promise.all([0, 1, 2, 3].map(() => m.primary.connect('v')));
  t.after(() => { for (const c of clients) c.sock.destroy(); });
  const copying = m.move.copy();
  // Each connection: 200 writes of 64 KiB over the same 24 MiB, 16 in flight, each with its own pattern.
  await Promise.all(clients.map(async (c, k) => {
    let answered = 0;
    const done = new Promise<void>((resolve, reject) => {
      let pending = Buffer.alloc(0);
      c.sock.removeAllListeners('data').on('data', (b: Buffer) => {
        pending = Buffer.concat([pending, b]);
        for (; pending.length >= 16; pending = pending.subarray(16)) {
          if (pending.readUInt32BE(4) !== 0) reject(new Error(`write failed: ${pending.readUInt32BE(4)}`));
          if (++answered === 200) resolve();
        }
      });
    });
    for (let i = 0; i < 200; i++) {
      const offset = BigInt(((i * 7 + k * 13) % 384) * 65536);
      c.sock.write(requestFrame(1, BigInt(i), offset, 65536, Buffer.alloc(65536, 16 * k + (i % 16))));
      if (i >= 16 && i - answered >= 16) await new Promise((r) => setImmediate(r));
    }
    await done;
  }));
  await copying;
  assert.equal(m.viaEventLoop(), 0);
  assert.equal(digest(m.primary.file('v')), digest(copy.file('c')), 'the copies are alike');
  assert.deepEqual(m.failures, []);
});

test('a copy that refuses a write (full) fails it with ENOSPC, and the mirror hears of it once', async (t) => {
  const small = smallFilesystem(8 * 1024);
  const copy = await startNbd(t, { plane: 'unix', volumes: [{ name: 'c', sizeGiB: 1 }], dir: small });
  unmountAfter(t, small);
  const m = await mirrored(t, copy, { native: true });
  fill(small);
  const r = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 4M', m.primary.uri('v')]).catch((e: { stdout: string; stderr: string }) => e);
  assert.match(`${r.stdout}${r.stderr}`, /No space left on device/);
  assert.equal(m.viaEventLoop(), 0);
  await waitFor('the failure reported', async () => m.failures.length > 0); // it crosses to the event loop
  assert.equal(m.failures.length, 1);
  assert.match(m.failures[0]!.message, /ENOSPC/);
  assert.equal((m.failures[0]!.cause as { code?: string }).code, 'ENOSPC');
});
