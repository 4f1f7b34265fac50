/**
 * Zero-copy READs and WRITEs on the native data plane (issue 19): a READ of at
 * least spliceMinBytes on a Unix-socket connection is moved from the page
 * cache to the socket with splice(2). Every byte must be what the file holds, with simple replies (a
 * raw client) and structured ones (nbdcopy, many requests in flight on
 * several connections); a file shorter than the export still reads its tail
 * as zeros (the copying path takes over); and a small READ beside them is
 * served by copying as before. A WRITE of at least spliceWriteMinBytes has
 * its payload spliced from the socket into the file (Unix sockets, and TCP
 * when asked): the file must hold the client's bytes whatever path took them.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { nbd } from '../../src/export/index.ts';
import { startNbd } from '../helpers/nbd-export.ts';
import { requestFrame, simpleRequest } from '../helpers/nbd-raw.ts';

const run = promisify(execFile);
const KiB = 1024;
const MiB = 1024 * KiB;

test('spliced READs give the file\'s bytes: simple replies, structured ones under nbdcopy, and a short file\'s zero tail', { timeout: 120_000 }, async (t) => {
  // READs are copied by default: splicing is asked for (Unix-socket connections; TCP ones only with spliceOverTcp).
  const f = await startNbd(t, { plane: 'unix', volumes: [{ name: 'v', sizeGiB: 1 }], options: { spliceMinBytes: 64 * KiB } });
  const file = f.file('v');
  const data = randomBytes(24 * MiB);
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, data, 0, data.length, 0);
  fs.closeSync(fd);

  // Simple replies: spliced sizes (64 KiB up to the pipe's 1 MiB), one larger (copied: it does not fit a pipe), and a small one.
  const c = await f.connect('v');
  for (const [offset, length] of [[0, MiB], [MiB + 512, 64 * KiB], [3 * MiB, 512 * KiB], [5 * MiB, 4 * MiB], [7 * MiB + 3, 4 * KiB]] as const) {
    const r = await simpleRequest(c, nbd.CMD.READ, BigInt(offset), length);
    assert.equal(r.error, 0);
    assert.ok(r.data!.equals(data.subarray(offset, offset + length)), `READ ${length} at ${offset}`);
  }

  // Structured replies and deep queues: nbdcopy to a file, compared whole.
  const copy = path.join(f.dir, 'copy.raw');
  await run('nbdcopy', ['--connections=2', '--requests=16', '--request-size=1048576', f.uri('v'), copy]);
  const copied = fs.readFileSync(copy);
  assert.equal(copied.length, 1024 * MiB);
  assert.ok(copied.subarray(0, data.length).equals(data), 'the data');
  assert.ok(copied.subarray(data.length).every((b) => b === 0), 'the rest reads as zeros');

  // The file shrinks under the export: a READ across its end gives data then zeros.
  fs.truncateSync(file, 2 * MiB + 100);
  const tail = await simpleRequest(c, nbd.CMD.READ, BigInt(2 * MiB), MiB);
  assert.equal(tail.error, 0);
  assert.ok(tail.data!.subarray(0, 100).equals(data.subarray(2 * MiB, 2 * MiB + 100)));
  assert.ok(tail.data!.subarray(100).every((b) => b === 0));
  c.sock.destroy();
});

/** Sends `frame` in pieces of `piece` bytes, each its own send (awaited), as a client writing slowly would. */
async function dribble(sock: net.Socket, frame: Buffer, piece: number): Promise<void> {
  for (let at = 0; at < frame.length; at += piece) {
    await new Promise<void>((resolve, reject) => sock.write(frame.subarray(at, at + piece), (err) => (err ? reject(err) : resolve())));
  }
}

for (const plane of ['native', 'unix'] as const) {
  test(`spliced WRITEs (${plane === 'unix' ? 'Unix socket' : 'TCP'}) put the client's bytes in the file: spliced and copied sizes, FUA, a payload in more pieces than a pipe holds, a refused one, nbdcopy`, { timeout: 120_000 }, async (t) => {
    // Unix-socket connections splice by default; TCP ones only with spliceOverTcp.
    const f = await startNbd(t, { plane, volumes: [{ name: 'v', sizeGiB: 1 }], options: { spliceWriteMinBytes: 64 * KiB, spliceOverTcp: plane === 'native' } });
    const file = f.file('v');
    const onDisk = (offset: number, length: number): Buffer => {
      const b = Buffer.alloc(length);
      const fd = fs.openSync(file, 'r');
      fs.readSync(fd, b, 0, length, offset);
      fs.closeSync(fd);
      return b;
    };
    const c = await f.connect('v');
    // Spliced (64 KiB up to the pipe's 1 MiB), copied (larger than a pipe; FUA; smaller than the bound).
    for (const [offset, length, flags] of [[0, MiB, 0], [MiB + 512, 64 * KiB, 0], [3 * MiB, 4 * MiB, 0], [8 * MiB, MiB, nbd.CMD_FLAG.FUA], [10 * MiB + 3, 4 * KiB, 0]] as const) {
      const data = randomBytes(length);
      assert.equal((await simpleRequest(c, nbd.CMD.WRITE, BigInt(offset), length, data, flags)).error, 0, `WRITE ${length} at ${offset}`);
      assert.ok(onDisk(offset, length).equals(data), `WRITE ${length} at ${offset} (flags ${flags}) is in the file`);
    }

    // A payload sent 1 KiB at a time: on a Unix socket each send is a piece of its own in the pipe,
    // more than it holds, so the copying path takes over midway. A READ right behind it finds the
    // stream in step.
    const slow = randomBytes(MiB);
    const frame = requestFrame(nbd.CMD.WRITE, 7n, BigInt(12 * MiB), MiB, slow);
    await dribble(c.sock, frame, KiB);
    const head = await c.reader.read(16);
    assert.equal(head.readUInt32BE(4), 0, 'the dribbled WRITE succeeded');
    assert.equal(head.readBigUInt64BE(8), 7n);
    assert.ok(onDisk(12 * MiB, MiB).equals(slow), 'the dribbled WRITE is in the file whole');
    const back = await simpleRequest(c, nbd.CMD.READ, BigInt(12 * MiB), 4 * KiB);
    assert.ok(back.data!.equals(slow.subarray(0, 4 * KiB)), 'and reads back');

    // Refused after its payload was spliced (it crosses the end): answered ENOSPC, and what the pipe
    // held goes nowhere — the next spliced WRITE writes its own bytes only.
    const size = 1024 * MiB;
    assert.equal((await simpleRequest(c, nbd.CMD.WRITE, BigInt(size - 512 * KiB), MiB, randomBytes(MiB))).error, nbd.ERR.ENOSPC);
    const next = randomBytes(256 * KiB);
    assert.equal((await simpleRequest(c, nbd.CMD.WRITE, BigInt(14 * MiB), next.length, next)).error, 0);
    assert.ok(onDisk(14 * MiB, next.length).equals(next), 'the WRITE after a refused one holds its own bytes');
    assert.ok(onDisk(size - 512 * KiB, 512 * KiB).every((b) => b === 0), 'the refused WRITE changed nothing');
    c.sock.destroy();

    // Many requests in flight on several connections: nbdcopy from a file, compared whole.
    const src = path.join(f.dir, 'src.raw');
    const data = randomBytes(32 * MiB);
    fs.writeFileSync(src, data);
    await run('nbdcopy', ['--connections=2', '--requests=16', '--request-size=1048576', src, f.uri('v')]);
    assert.ok(onDisk(0, data.length).equals(data), 'nbdcopy\'s writes are in the file');
  });
}
