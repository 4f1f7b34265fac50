/**
 * Issue 14: RBD volumes on the native NBD data plane. Plain connections to an
 * RBD volume's export are served by the data plane's threads through librbd's
 * aio calls (never the handle's methods, never the event loop), and what
 * standard clients write is what the image holds, read back through Basalt
 * and through librbd itself (qemu-img on an `rbd:` URL): patterns at unaligned
 * offsets across object boundaries, FUA, write-zeroes with and without holes,
 * discard, many requests on several connections at once (nbdcopy), block
 * status from the object map. Fencing, quiescing, QoS and NBD stats hold as
 * they do for files. The event-loop plane is checked the same way.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { describe, test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import pino from 'pino';
import { GuardedDriver, RbdDriver, type VolumeHandle } from '../../src/drivers/index.ts';
import { NbdServer, qosLimits, type NbdExport, type QosLimits } from '../../src/export/index.ts';
import { rbdFixture } from '../conformance/rbd-fixture.ts';
import { openExport, requestFrame, simpleRequest } from '../helpers/nbd-raw.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const CMD = { READ: 0, WRITE: 1 } as const;
const FLAG_FUA = 1;
const fixture = await rbdFixture();
const { ceph } = fixture;

interface RbdNbd {
  server: NbdServer;
  port: number;
  pool: string;
  ids: Map<string, string>;
  /** Calls of the volumes' handle methods (the event loop's path). */
  handleCalls(): number;
  uri(name: string): string;
  /** QEMU's `rbd:` URL of an export's image: librbd in qemu-img, not Basalt. */
  rbdUrl(name: string): string;
  /** A digest of the first `bytes` of an export's image, read by `rbd export` (librbd, not Basalt). */
  digest(name: string, bytes: number): Promise<string>;
  setQos(name: string, qos: QosLimits): void;
  connect(name: string): ReturnType<typeof openExport>;
}

/** An NBD server over RBD volumes of a fresh pool (the rbd driver behind its guard), on `plane`. */
async function startRbdNbd(t: TestContext, plane: 'native' | 'event-loop', names: string[], sizeMiB = 256, o: { quiesceDrainMs?: number } = {}): Promise<RbdNbd & { options: Record<string, unknown> }> {
  const { driver: inner, pool, options } = await fixture.rbdBackend();
  const driver = new GuardedDriver(inner, 60_000);
  await driver.init();
  const ids = new Map<string, string>();
  const exports = new Map<string, NbdExport>();
  let calls = 0;
  const count = <A extends unknown[], R>(fn: (...a: A) => R) => (...a: A): R => { calls++; return fn(...a); };
  for (const name of names) {
    const id = randomUUID();
    ids.set(name, id);
    // Volumes are whole GiB; the image is then shrunk to keep the cluster's work small.
    await driver.createVolume({ id, sizeGiB: 1 });
    await ceph.rbd('resize', '--allow-shrink', '--size', `${sizeMiB}M`, `${pool}/${RbdDriver.imageName(id)}`);
    const open = async (): Promise<VolumeHandle> => {
      const h = await driver.openVolume({ id, sizeGiB: 1 });
      return { ...h, read: count(h.read), write: count(h.write), flush: count(h.flush), trim: count(h.trim!), writeZeroes: count(h.writeZeroes!), blockStatus: count(h.blockStatus!) };
    };
    exports.set(name, { name, key: id, readOnly: false, canMultiConn: true, open });
  }
  const server = new NbdServer({ provider: { find: async (n) => exports.get(n), list: async () => [] }, log: pino({ level: 'silent' }), dataPlane: plane, ...o });
  const { port } = await server.listen(0, '127.0.0.1');
  t.after(async () => {
    await server.close();
    for (const id of ids.values()) await driver.deleteVolume({ id }).catch(() => undefined);
  });
  const image = (name: string): string => `${pool}/${RbdDriver.imageName(ids.get(name)!)}`;
  return {
    server, port, pool, ids, options,
    handleCalls: () => calls,
    uri: (name) => `nbd://127.0.0.1:${port}/${name}`,
    rbdUrl: (name) => `rbd:${image(name)}:conf=${ceph.confPath}:id=${ceph.user}:keyring=${ceph.keyringPath}`,
    async digest(name, bytes) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-rbd-export-'));
      try {
        await ceph.rbd('export', image(name), path.join(dir, 'image'));
        const data = fs.readFileSync(path.join(dir, 'image')).subarray(0, bytes);
        return createHash('sha256').update(data).digest('hex');
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
    setQos(name, qos) {
      exports.set(name, { ...exports.get(name)!, qos });
    },
    connect: (name) => openExport('127.0.0.1', port, name),
  };
}

function tempFile(t: TestContext, bytes: Buffer | number): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-rbd-plane-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'data');
  if (typeof bytes === 'number') fs.writeFileSync(file, Buffer.alloc(0)), fs.truncateSync(file, bytes);
  else fs.writeFileSync(file, bytes);
  return file;
}

for (const plane of ['native', 'event-loop'] as const) describe(`${plane} plane`, () => {
  test('what qemu-io writes (unaligned, across objects, FUA, zeroes with and without holes, discard) is what librbd reads back', { timeout: 180_000 }, async (t) => {
    const s = await startRbdNbd(t, plane, ['v']);
    // Offsets inside, across and at the ends of 4 MiB objects, unaligned ones too.
    const offsets = [0, 4096 + 512, 4 * MiB - 2048, 7 * MiB + 123, 12 * MiB - 1, 100 * MiB, 256 * MiB - 4096];
    const writes = offsets.flatMap((o, i) => ['-c', `write ${i % 2 ? '-f ' : ''}-P ${0x10 + i} ${o} 4096`]);
    await run('qemu-io', ['-f', 'raw', ...writes,
      '-c', 'write -P 0x77 20M 3M', '-c', 'write -z 20M 1M', '-c', 'write -z -u 22M 1M', '-c', 'discard 32M 4M', '-c', 'write -P 0x66 32M 4M', '-c', 'discard 33M 1M',
      '-c', 'flush', s.uri('v')]);
    const reads = offsets.flatMap((o, i) => ['-c', `read -P ${0x10 + i} ${o} 4096`]);
    const out = (await run('qemu-io', ['-f', 'raw', ...reads,
      '-c', 'read -P 0 20M 1M', '-c', 'read -P 0x77 21M 1M', '-c', 'read -P 0 22M 1M', '-c', 'read -P 0x66 32M 1M', '-c', 'read -P 0x66 34M 2M', s.uri('v')])).stdout;
    assert.doesNotMatch(out, /verification failed/);
    assert.equal((out.match(/^read /gm) ?? []).length, offsets.length + 5);
    // A discarded range reads as zeros or as its old data: either way Basalt and librbd agree.
    await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', s.uri('v'), s.rbdUrl('v')]);
    // librbd alone (no Basalt) reads what was written.
    const direct = (await run('qemu-io', ['-r', '-f', 'raw', '-c', `read -P ${0x10 + 3} ${7 * MiB + 123} 4096`, '-c', 'read -P 0x77 21M 1M', s.rbdUrl('v')])).stdout;
    assert.doesNotMatch(direct, /verification failed/);
    assert.equal(s.handleCalls() > 0, plane === 'event-loop', 'the native plane serves I/O without the handle');
    // NBD stats count the requests on either plane.
    const stats = s.server.stats.snapshot().filter((e) => e.volume === s.ids.get('v'));
    const of = (op: string): number => stats.find((e) => e.op === op)?.count ?? 0;
    assert.ok(of('write') >= offsets.length + 2 && of('read') >= offsets.length + 5 && of('zero') >= 2 && of('trim') >= 2 && of('flush') >= 1, JSON.stringify(stats));
    assert.ok((stats.find((e) => e.op === 'write')?.bytes ?? 0) >= offsets.length * 4096 + 7 * MiB);
  });

  test('nbdcopy over 4 connections of 16 requests each: every byte lands, zeros included, and reads back', { timeout: 180_000 }, async (t) => {
    const s = await startRbdNbd(t, plane, ['c'], 64);
    // First fill the image with 0xff, so that the source's zeros must really be written.
    await run('nbdcopy', ['--connections=4', '--requests=16', tempFile(t, Buffer.alloc(64 * MiB, 0xff)), s.uri('c')]);
    // Random data with runs of zeros: nbdcopy sends those as WRITE_ZEROES.
    const data = randomBytes(64 * MiB);
    for (let o = 0; o < data.length; o += 8 * MiB) data.fill(0, o + 2 * MiB, o + 2 * MiB + 3 * MiB + 4096 * (o / MiB));
    const source = tempFile(t, data);
    await run('nbdcopy', ['--connections=4', '--requests=16', source, s.uri('c')]);
    const back = path.join(path.dirname(source), 'back');
    await run('nbdcopy', ['--connections=4', '--requests=16', s.uri('c'), back]);
    assert.ok(fs.readFileSync(back).equals(data), 'nbdcopy reads back what it wrote');
    await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, s.rbdUrl('c')]);
    assert.equal(s.handleCalls() > 0, plane === 'event-loop');
  });
});

describe('native plane', () => {
  test('block status comes from the object map: written objects are data, the rest holes that read as zeros', { timeout: 120_000 }, async (t) => {
    const s = await startRbdNbd(t, 'native', ['m'], 64);
    await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 9M 4096', '-c', 'write -P 0x5b 40M 5M', s.uri('m')]);
    const map = (await run('nbdinfo', ['--map', s.uri('m')])).stdout;
    assert.match(map, /^\s*0\s+8388608\s+3\s+hole,zero/m, map);
    assert.match(map, /^\s*8388608\s+4194304\s+0\s+data/m, map);
    assert.match(map, /^\s*12582912\s+29360128\s+3\s+hole,zero/m, map);
    assert.match(map, /^\s*41943040\s+8388608\s+0\s+data/m, map);
    assert.match(map, /^\s*50331648\s+16777216\s+3\s+hole,zero/m, map);
    assert.equal(s.handleCalls(), 0);
  });

  test('no write lands after a fence completes, with FUA writes in flight', { timeout: 120_000 }, async (t) => {
    const s = await startRbdNbd(t, 'native', ['f'], 64);
    const size = 2 * MiB;
    const count = 24;
    for (let round = 0; round < 2; round++) {
      const c = await s.connect('f');
      t.after(() => c.sock.destroy());
      await writeMany(c.sock, count, size, FLAG_FUA, round);
      await s.server.closeExport('f');
      const atFence = await s.digest('f', count * size);
      await sleep(500);
      assert.equal(await s.digest('f', count * size), atFence, `round ${round}: the image changed after the fence completed`);
    }
  });

  test('a quiesce holds new writes and waits for those in flight; they go on after it', { timeout: 120_000 }, async (t) => {
    const s = await startRbdNbd(t, 'native', ['q'], 64);
    const c = await s.connect('q');
    t.after(() => c.sock.destroy());
    const count = 32;
    const replies = countReplies(c.sock);
    await writeMany(c.sock, count, MiB, 0, 7);
    let inside = '';
    await s.server.quiesce(s.ids.get('q')!, async () => {
      inside = await s.digest('q', count * MiB);
      await sleep(500);
      assert.equal(await s.digest('q', count * MiB), inside, 'no write reached the image during the quiesce');
    });
    // Every write is answered once the quiesce has ended.
    for (let i = 0; i < 200 && replies.count < count; i++) await sleep(50);
    assert.equal(replies.count, count);
    assert.equal(replies.errors, 0);
    const expected = Buffer.concat(Array.from({ length: count }, (_, i) => Buffer.alloc(MiB, ((i + 7) % 250) + 1)));
    assert.equal(await s.digest('q', count * MiB), createHash('sha256').update(expected).digest('hex'));
  });

  test('quiesces that give up on a write stuck in librbd leave libuv\'s threads free; the write completes later', { timeout: 120_000 }, async (t) => {
    const s = await startRbdNbd(t, 'native', ['w'], 64, { quiesceDrainMs: 100 });
    // Another client takes the image's exclusive lock and stops answering: a write through the
    // export waits in librbd for the lock (until the stopped client answers, or librbd gives up on it).
    const owner = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, '../conformance/rbd-writer-child.ts'), JSON.stringify({ options: s.options, vol: { id: s.ids.get('w')!, sizeGiB: 1 } })], { stdio: ['pipe', 'pipe', 'inherit'] });
    t.after(() => { owner.kill('SIGKILL'); });
    const lines = readline.createInterface({ input: owner.stdout! })[Symbol.asyncIterator]();
    assert.equal((await lines.next()).value, 'ready');
    owner.kill('SIGSTOP');
    const c = await s.connect('w');
    t.after(() => c.sock.destroy());
    let written = false;
    const stuck = simpleRequest(c, CMD.WRITE, 8192n, 4096, Buffer.alloc(4096, 0x3c)).finally(() => { written = true; });
    const quiesce = (): Promise<boolean> => s.server.quiesce(s.ids.get('w')!, async () => true).catch((err: { code?: string }) => {
      assert.equal(err.code, 'BACKEND_UNAVAILABLE');
      return false;
    });
    // The write is in librbd once a quiesce cannot drain it (before that, quiesces succeed).
    for (let i = 0; await quiesce(); i++) {
      assert.ok(i < 200, 'the write reached librbd');
      await sleep(10);
    }
    // More give-ups than libuv has threads (UV_THREADPOOL_SIZE, 4 by default): each one's wait for the
    // write used to hold a thread until the write ended, and a file call then waited for the write too.
    const pool = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
    for (let i = 0; i < pool; i++) assert.equal(await quiesce(), false, 'the write is still in flight');
    await fs.promises.stat(os.tmpdir());
    // Served while the write is still stuck (not because the write ended and freed the threads).
    await sleep(300);
    assert.equal(written, false, 'a file call is served while the write is still stuck');
    owner.kill('SIGCONT');
    assert.equal((await stuck).error, 0, 'the write completes once the lock comes');
  });

  test('a volume\'s IOPS limit holds on the native plane', { timeout: 60_000 }, async (t) => {
    const s = await startRbdNbd(t, 'native', ['l'], 16);
    s.setQos('l', qosLimits({ total_iops_sec: '100', total_iops_sec_max: '100', total_iops_sec_max_length: '0.1' }, 1)!);
    const c = await s.connect('l');
    t.after(() => c.sock.destroy());
    const started = performance.now();
    for (let i = 0; i < 100; i++) assert.equal((await simpleRequest(c, CMD.READ, BigInt(i * 4096), 4096)).error, 0);
    const seconds = (performance.now() - started) / 1000;
    // 100 reads at 100/s, 10 of them a burst: at least 0.9 s.
    assert.ok(seconds >= 0.85, `100 reads in ${seconds.toFixed(2)} s: faster than 100 IOPS`);
    assert.equal(s.handleCalls(), 0);
  });
});

/** Sends `count` writes of `size` bytes (fill byte from `seed`) without waiting for replies; resolves at the first reply. */
async function writeMany(sock: net.Socket, count: number, size: number, flags: number, seed: number): Promise<void> {
  const first = new Promise((r) => sock.once('data', r));
  for (let i = 0; i < count; i++) {
    const frame = requestFrame(CMD.WRITE, BigInt(i + 1), BigInt(i * size), size, Buffer.alloc(size, ((i + seed) % 250) + 1));
    frame.writeUInt16BE(flags, 4);
    sock.write(frame);
  }
  await first;
}

/** Counts simple replies (16 bytes each: no payload for writes) arriving on `sock`, and their errors. */
function countReplies(sock: net.Socket): { count: number; errors: number } {
  const seen = { count: 0, errors: 0 };
  let pending = Buffer.alloc(0);
  sock.on('data', (d: Buffer) => {
    pending = Buffer.concat([pending, d]);
    while (pending.length >= 16) {
      if (pending.readUInt32BE(4) !== 0) seen.errors++;
      seen.count++;
      pending = pending.subarray(16);
    }
  });
  return seen;
}
