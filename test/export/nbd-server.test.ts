/**
 * Basalt's NBD server against Debian's real clients (nbdinfo, qemu-io,
 * qemu-img, nbdcopy) over a file-driver volume, plus malformed traffic.
 * Every test runs on both data planes: the native threads (the default for
 * file-backed exports), with and without polling for requests, and the event
 * loop (TLS and other drivers).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import pino from 'pino';
import { FileDriver, GuardedDriver, type VolumeHandle } from '../../src/drivers/index.ts';
import { NbdServer, type NbdExport } from '../../src/export/index.ts';
import { connectExport, optionFrame, requestFrame } from '../helpers/nbd-raw.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

interface Setup {
  port: number; server: NbdServer; dir: string; driver: FileDriver; uri: (name: string) => string;
  /** Calls that reached the volume handle's I/O methods (the event loop's data plane). */
  handleCalls: () => number;
}

const PLANES = [
  { title: 'native data plane', dataPlane: 'native', pollMicros: undefined },
  { title: 'native data plane without polling', dataPlane: 'native', pollMicros: 0 },
  { title: 'event-loop data plane', dataPlane: 'event-loop', pollMicros: undefined },
] as const;

for (const { title, dataPlane, pollMicros } of PLANES) describe(title, () => {

async function setup(t: TestContext, volumes: Array<{ name: string; sizeGiB: number; readOnly?: boolean }>): Promise<Setup & { ids: Map<string, string> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-nbd-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const driver = new FileDriver({ poolName: 'p', directory: dir, totalCapacityGiB: 0 });
  const guarded = new GuardedDriver(driver, 60_000);
  await guarded.init();
  const ids = new Map<string, string>();
  const exports = new Map<string, NbdExport>();
  for (const v of volumes) {
    const id = randomUUID();
    ids.set(v.name, id);
    await guarded.createVolume({ id, sizeGiB: v.sizeGiB });
    const open = async (): Promise<VolumeHandle> => {
      const h = await guarded.openVolume({ id, sizeGiB: v.sizeGiB });
      const count = <A extends unknown[], R>(fn: (...a: A) => R) => (...a: A): R => { calls++; return fn(...a); };
      return { ...h, read: count(h.read), write: count(h.write), flush: count(h.flush), trim: count(h.trim!), writeZeroes: count(h.writeZeroes!), blockStatus: count(h.blockStatus!) };
    };
    exports.set(v.name, { name: v.name, key: id, readOnly: v.readOnly ?? false, canMultiConn: guarded.capabilities.canMultiConn, description: `volume ${id}`, open });
  }
  let calls = 0;
  const server = new NbdServer({ provider: { find: async (n) => exports.get(n), list: async () => [] }, log: pino({ level: 'silent' }), dataPlane, pollMicros });
  const { port } = await server.listen(0, '127.0.0.1');
  t.after(() => server.close());
  return { port, server, dir, driver, ids, uri: (name) => `nbd://127.0.0.1:${port}/${name}`, handleCalls: () => calls };
}

test('nbdinfo sees size, flags and base:allocation', async (t) => {
  const s = await setup(t, [{ name: 'vol-a', sizeGiB: 1 }, { name: 'ro', sizeGiB: 1, readOnly: true }]);
  const info = JSON.parse((await run('nbdinfo', ['--json', s.uri('vol-a')])).stdout);
  const e = info.exports[0];
  assert.equal(e['export-size'], GiB);
  assert.equal(e['is_read_only'], false);
  assert.equal(e['can_flush'], true);
  assert.equal(e['can_fua'], true);
  assert.equal(e['can_trim'], true);
  assert.equal(e['can_zero'], true);
  assert.equal(e['can_fast_zero'], true);
  assert.equal(e['can_multi_conn'], true);
  assert.equal(e['can_cache'], true);
  assert.ok(e.contexts.includes('base:allocation'));
  assert.equal(e['block_size_preferred'], 4096);
  assert.equal(JSON.parse((await run('nbdinfo', ['--json', s.uri('ro')])).stdout).exports[0]['is_read_only'], true);
  await assert.rejects(run('nbdinfo', [s.uri('nonesuch')]), 'an unknown export is refused');
  assert.doesNotMatch((await run('nbdinfo', ['--list', `nbd://127.0.0.1:${s.port}`])).stdout, /vol-a/, 'LIST shows no export names: they are credentials');

  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 4M 1M', s.uri('vol-a')]);
  const map = (await run('nbdinfo', ['--map', s.uri('vol-a')])).stdout;
  assert.match(map, /^\s*4194304\s+1048576\s+0\s+data/m, `the written MiB is data:\n${map}`);
  assert.match(map, /^\s*0\s+4194304\s+3\s+hole,zero/m);
});

test('qemu-io writes patterns at many offsets and reads them back after reconnecting', async (t) => {
  const s = await setup(t, [{ name: 'v', sizeGiB: 1 }]);
  const offsets = [0, 4096 + 512, 65536 + 512, 7 * MiB + 123, 512 * MiB, GiB - 4096];
  const writes = offsets.flatMap((o, i) => ['-c', `write -P ${0x10 + i} ${o} 4096`]);
  await run('qemu-io', ['-f', 'raw', ...writes, s.uri('v')]);
  const reads = offsets.flatMap((o, i) => ['-c', `read -P ${0x10 + i} ${o} 4096`]);
  const out = (await run('qemu-io', ['-f', 'raw', ...reads, s.uri('v')])).stdout;
  assert.doesNotMatch(out, /Pattern verification failed/);
  assert.equal((out.match(/read 4096\/4096 bytes/g) ?? []).length, offsets.length);
  assert.equal(s.handleCalls() > 0, dataPlane === 'event-loop', 'native threads serve I/O without the handle');
  // The bytes are really in the volume file.
  const fd = fs.openSync(path.join(s.dir, `volume-${s.ids.get('v')}`), 'r');
  const b = Buffer.alloc(4096);
  fs.readSync(fd, b, 0, 4096, 512 * MiB);
  fs.closeSync(fd);
  assert.ok(b.equals(Buffer.alloc(4096, 0x10 + offsets.indexOf(512 * MiB))));
  // Past the end is refused without touching the volume.
  const past = await run('qemu-io', ['-f', 'raw', '-c', `read 0 ${GiB + 4096}`, s.uri('v')]).catch((e: { stdout: string; stderr: string }) => e);
  assert.match(`${past.stdout}${past.stderr}`, /Input\/output error|Invalid argument|out of range|cannot/i);
});

test('trim and write-zeroes make holes; qemu-img and nbdcopy copy a sparse volume', async (t) => {
  const s = await setup(t, [{ name: 'src', sizeGiB: 1 }]);
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 8M', '-c', 'write -P 0x22 600M 2M', s.uri('src')]);
  await run('qemu-io', ['-f', 'raw', '-c', 'discard 0 4M', '-c', 'write -z -u 4M 2M', s.uri('src')]);
  const file = path.join(s.dir, `volume-${s.ids.get('src')}`);
  assert.ok(fs.statSync(file).blocks * 512 <= 5 * MiB, 'trim and write-zeroes freed the space');
  const verify = (await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0 0 6M', '-c', 'read -P 0x11 6M 2M', '-c', 'read -P 0x22 600M 2M', s.uri('src')])).stdout;
  assert.doesNotMatch(verify, /verification failed/);

  const copy = path.join(s.dir, 'copy.raw');
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', s.uri('src'), copy]);
  assert.ok(fs.statSync(copy).blocks * 512 <= 6 * MiB, 'qemu-img kept the copy sparse thanks to block status');
  const copy2 = path.join(s.dir, 'copy2.raw');
  fs.writeFileSync(copy2, '');
  await run('nbdcopy', [s.uri('src'), copy2]);
  assert.equal(fs.statSync(copy2).size, GiB);
  const a = Buffer.alloc(2 * MiB);
  const fd = fs.openSync(copy2, 'r');
  fs.readSync(fd, a, 0, a.length, 600 * MiB);
  fs.closeSync(fd);
  assert.ok(a.equals(Buffer.alloc(2 * MiB, 0x22)));
});

test('many requests in flight over several connections: random data copied in and out comes back identical', async (t) => {
  const s = await setup(t, [{ name: 'c', sizeGiB: 1 }]);
  const src = path.join(s.dir, 'random.raw');
  const fd = fs.openSync(src, 'w');
  fs.ftruncateSync(fd, GiB);
  for (let i = 0; i < 24; i++) fs.writeSync(fd, randomBytes(MiB + 4096 * i), 0, undefined, (37 * i % 1000) * MiB + 512 * i);
  fs.closeSync(fd);
  await run('nbdcopy', ['--connections=4', '--requests=64', src, s.uri('c')]);
  const back = path.join(s.dir, 'back.raw');
  fs.writeFileSync(back, '');
  await run('nbdcopy', ['--connections=4', '--requests=64', s.uri('c'), back]);
  await run('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', src, back]);
  await run('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', src, path.join(s.dir, `volume-${s.ids.get('c')}`)]);
});

test('an idle connection costs no CPU: polling for requests stops while the client sends none', async (t) => {
  const s = await setup(t, [{ name: 'idle', sizeGiB: 1 }]);
  const sock = await connectExport('127.0.0.1', s.port, 'idle');
  t.after(() => sock.destroy());
  const replies: Buffer[] = [];
  sock.on('data', (c) => replies.push(c));
  // A busy spell (every reply awaited, as at queue depth 1), then silence.
  for (let cookie = 1n; cookie <= 200n; cookie++) {
    const answered = new Promise((r) => sock.once('data', r));
    sock.write(requestFrame(0, cookie, 4096n * cookie, 4096));
    await answered;
  }
  await new Promise((r) => setTimeout(r, 50));
  const cpu = process.cpuUsage();
  const start = performance.now();
  await new Promise((r) => setTimeout(r, 500));
  const used = process.cpuUsage(cpu);
  const share = (used.user + used.system) / 1000 / (performance.now() - start);
  assert.ok(share < 0.2, `the server used ${(share * 100).toFixed(0)}% of a CPU with an idle client`);
  assert.equal(Buffer.concat(replies).length, 200 * (16 + 4096), 'every read was answered in full');
});

test('read-only exports refuse writes with EPERM', async (t) => {
  const s = await setup(t, [{ name: 'ro', sizeGiB: 1, readOnly: true }]);
  const r = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4096', s.uri('ro')]).catch((e: { stdout: string; stderr: string }) => e);
  assert.match(`${r.stdout}${r.stderr}`, /Operation not permitted|read-only|Permission denied/i);
  const ok = (await run('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0 0 4096', s.uri('ro')])).stdout;
  assert.match(ok, /read 4096\/4096/);
});

test('fencing: closing an export drops its connections at once', async (t) => {
  const s = await setup(t, [{ name: 'f', sizeGiB: 1 }]);
  const sock = await connectExport('127.0.0.1', s.port, 'f');
  const closed = new Promise((r) => sock.once('close', r));
  await s.server.closeExport('f');
  await closed;
});

test('malformed frames: the server replies or closes cleanly and keeps serving others', async (t) => {
  const s = await setup(t, [{ name: 'm', sizeGiB: 1 }]);
  const send = async (frames: Buffer[]): Promise<Buffer> => {
    const sock = net.connect(s.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    sock.on('data', (c) => chunks.push(c));
    await new Promise((r) => sock.once('connect', r));
    for (const f of frames) sock.write(f);
    await new Promise((r) => { sock.once('close', r); setTimeout(() => { sock.destroy(); r(undefined); }, 500); });
    return Buffer.concat(chunks);
  };
  const header = optionFrame;
  const flags = Buffer.from([0, 0, 0, 3]);
  await send([flags, Buffer.from('garbage-garbage-garbage')]); // bad option magic
  await send([Buffer.from([0xff, 0xff, 0xff, 0xff])]); // unknown client flags
  await send([flags, header(7, Buffer.from([0, 0, 0, 50, 1]))]); // GO with a name longer than the data
  await send([flags, header(10, Buffer.from([0, 0, 0, 1]))]); // SET_META_CONTEXT truncated
  await send([flags, header(99, Buffer.alloc(3))]); // unknown option
  const tooBig = Buffer.alloc(16);
  tooBig.write('IHAVEOPT', 0);
  tooBig.writeUInt32BE(7, 8);
  tooBig.writeUInt32BE(0x7fffffff, 12);
  await send([flags, tooBig]); // oversized option length
  await send([flags, header(7, Buffer.alloc(2))]); // GO too short
  // An unknown option gets ERR_UNSUP rather than a hang-up.
  const unsup = await send([flags, header(99, Buffer.alloc(0))]);
  assert.equal(unsup.length, 18 + 20);
  assert.equal(unsup.readUInt32BE(18 + 12), 0x80000001);
  // Transmission phase (requests sent together with the negotiation): each
  // gets its answer, by cookie, in whatever order they complete; a bad
  // request magic then ends the connection.
  const exportName = header(1, Buffer.from('m'));
  const request = (type: number, cookie: bigint, offset: bigint, length: number, magic = 0x25609513): Buffer => requestFrame(type, cookie, offset, length, undefined, magic);
  const replies = await send([
    flags, exportName,
    request(0, 1n, BigInt(GiB), 4096), // READ past the end: EINVAL
    request(6, 2n, BigInt(GiB - 4096), 8192), // WRITE_ZEROES past the end: ENOSPC
    request(7, 3n, 0n, 4096), // BLOCK_STATUS without structured replies: EINVAL
    request(5, 4n, 0n, 65536), // CACHE: done
    request(3, 5n, 0n, 0), // FLUSH: done
    request(42, 6n, 0n, 0), // an unknown command: EINVAL
    request(4, 7n, 2n ** 64n - 4096n, 8192), // TRIM whose end overflows 64 bits: EINVAL
    request(0, 8n, 0n, 1, 0xdeadbeef),
  ]);
  const simple = replies.subarray(18 + 10); // after the greeting and the export-name answer
  assert.equal(simple.length, 7 * 16, 'seven simple replies, then the bad magic ended the connection');
  const errors = new Map<bigint, number>();
  for (let at = 0; at < simple.length; at += 16) {
    assert.equal(simple.readUInt32BE(at), 0x67446698);
    errors.set(simple.readBigUInt64BE(at + 8), simple.readUInt32BE(at + 4));
  }
  assert.deepEqual([...errors].sort(([a], [b]) => Number(a - b)), [[1n, 22], [2n, 28], [3n, 22], [4n, 0], [5n, 0], [6n, 22], [7n, 22]]);
  const huge = await send([flags, exportName, request(1, 9n, 0n, 0x7fffffff)]);
  assert.equal(huge.length, 18 + 10, 'an oversized write ends the connection without a reply');
  // Still serving.
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 7 0 4096', '-c', 'read -P 7 0 4096', s.uri('m')]);
});

test('a quiesce whose writes in flight never finish gives up: its step does not run, writes go on, the error is retryable', async () => {
  const server = new NbdServer({ provider: { find: async () => undefined, list: async () => [] }, log: pino({ level: 'silent' }), quiesceDrainMs: 200 });
  server.trackWrite('v', new Promise<void>(() => undefined)); // a write stuck in its backend
  let ran = false;
  await assert.rejects(server.quiesce('v', async () => { ran = true; }), (err: { code?: string; retryable?: boolean }) => err.code === 'BACKEND_UNAVAILABLE' && err.retryable === true);
  assert.equal(ran, false, 'the snapshot is not taken with a write half done');
  await server.gate('v'); // new writes are not held
  assert.equal(await server.quiesce('w', async () => 'taken'), 'taken', 'another volume quiesces as before');
  await server.close();
});

test('a quiesce right after another drains at once: the writes the first held wait at the gate, not in flight', async (t) => {
  const s = await setup(t, [{ name: 'b', sizeGiB: 1 }]);
  const key = s.ids.get('b')!;
  const sock = await connectExport('127.0.0.1', s.port, 'b');
  t.after(() => sock.destroy());
  const replies: Buffer[] = [];
  sock.on('data', (c) => replies.push(c));
  let release!: () => void;
  const first = s.server.quiesce(key, () => new Promise<void>((r) => { release = r; }));
  // The second is queued before the write comes: it takes the gate first when the first ends.
  const second = s.server.quiesce(key, async () => 'taken');
  sock.write(requestFrame(1, 5n, 0n, 4096, Buffer.alloc(4096, 7))); // WRITE, held at the first one's gate
  await new Promise((r) => setTimeout(r, 100)); // (a write not yet at the gate only makes this test weaker)
  release();
  await first;
  assert.equal(await Promise.race([second, new Promise((r) => setTimeout(() => r('still draining after 10 s'), 10_000))]), 'taken');
  for (const until = Date.now() + 5000; !Buffer.concat(replies).toString('hex').includes('0000000000000005') && Date.now() < until;) await new Promise((r) => setTimeout(r, 20));
  assert.ok(Buffer.concat(replies).toString('hex').includes('0000000000000005'), 'the held write is answered after both');
});

test('quiesce holds writes back until the snapshot is done, and lets reads through', async (t) => {
  const s = await setup(t, [{ name: 'q', sizeGiB: 1 }]);
  const sock = await connectExport('127.0.0.1', s.port, 'q');
  const replies: Buffer[] = [];
  sock.on('data', (c) => replies.push(c));
  const request = (type: number, cookie: number, length: number, data?: Buffer): Buffer => requestFrame(type, BigInt(cookie), 0n, length, data);
  let release!: () => void;
  const held = new Promise<void>((r) => { release = r; });
  const done = s.server.quiesce(s.ids.get('q')!, () => held);
  // More held writes than the native plane's engaged workers (two): each one waiting lets another worker read.
  for (const cookie of [5, 6, 7]) sock.write(request(1, cookie, 4096, Buffer.alloc(4096, 9))); // WRITE
  sock.write(request(0, 8, 4096)); // READ
  const cookies = () => Buffer.concat(replies).toString('hex');
  for (const until = Date.now() + 5000; !cookies().includes('0000000000000008') && Date.now() < until;) await new Promise((r) => setTimeout(r, 20));
  assert.ok(cookies().includes('0000000000000008'), 'the read was answered during the quiesce');
  for (const w of ['05', '06', '07']) assert.ok(!cookies().includes(`00000000000000${w}`), `write ${w} waits`);
  release();
  await done;
  for (const until = Date.now() + 5000; !cookies().includes('0000000000000005') && Date.now() < until;) await new Promise((r) => setTimeout(r, 20));
  for (const w of ['05', '06', '07']) assert.ok(cookies().includes(`00000000000000${w}`), `write ${w} completes after the quiesce`);
  sock.destroy();
});

});
