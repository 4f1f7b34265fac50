/**
 * Basalt's NBD server against Debian's real clients (nbdinfo, qemu-io,
 * qemu-img, nbdcopy) over a file-driver volume, plus malformed traffic.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import pino from 'pino';
import { FileDriver, GuardedDriver } from '../../src/drivers/index.ts';
import { NbdServer, type NbdExport } from '../../src/export/index.ts';
import { connectExport, optionFrame, requestFrame } from '../helpers/nbd-raw.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

interface Setup { port: number; server: NbdServer; dir: string; driver: FileDriver; uri: (name: string) => string }

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
    exports.set(v.name, { name: v.name, key: id, readOnly: v.readOnly ?? false, description: `volume ${id}`, open: () => guarded.openVolume({ id, sizeGiB: v.sizeGiB }) });
  }
  const server = new NbdServer({ provider: { find: async (n) => exports.get(n), list: async () => [] }, log: pino({ level: 'silent' }) });
  const { port } = await server.listen(0, '127.0.0.1');
  t.after(() => server.close());
  return { port, server, dir, driver, ids, uri: (name) => `nbd://127.0.0.1:${port}/${name}` };
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
  s.server.closeExport('f');
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
  // Transmission phase: an out-of-range read gets EINVAL; a bad request magic ends the connection.
  const exportName = header(1, Buffer.from('m'));
  const request = (magic: number, type: number, offset: bigint, length: number): Buffer => requestFrame(type, 0xc00c1eb0n, offset, length, undefined, magic);
  const replies = await send([flags, exportName, request(0x25609513, 0, BigInt(GiB), 4096), request(0xdeadbeef, 0, 0n, 1)]);
  const simple = replies.subarray(18 + 10); // after the greeting and the export-name answer
  assert.equal(simple.readUInt32BE(0), 0x67446698);
  assert.equal(simple.readUInt32BE(4), 22, 'EINVAL');
  assert.equal(simple.readBigUInt64BE(8), 0xc00c1eb0n, 'the reply carries the request cookie');
  const huge = await send([flags, exportName, request(0x25609513, 1, 0n, 0x7fffffff)]);
  assert.equal(huge.length, 18 + 10, 'an oversized write ends the connection without a reply');
  // Still serving.
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 7 0 4096', '-c', 'read -P 7 0 4096', s.uri('m')]);
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
  sock.write(request(1, 7, 4096, Buffer.alloc(4096, 9))); // WRITE
  sock.write(request(0, 8, 4096)); // READ
  await new Promise((r) => setTimeout(r, 200));
  const cookies = () => Buffer.concat(replies).toString('hex');
  assert.ok(cookies().includes('0000000000000008'), 'the read was answered during the quiesce');
  assert.ok(!cookies().includes('0000000000000007'), 'the write waits');
  release();
  await done;
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(cookies().includes('0000000000000007'), 'the write completes after the quiesce');
  sock.destroy();
});
