/**
 * Zero-copy READs on the native data plane (issue 19, part 3): a READ of at
 * least spliceMinBytes on a Unix-socket connection is moved from the page
 * cache to the socket with splice(2). Every byte must be what the file holds, with simple replies (a
 * raw client) and structured ones (nbdcopy, many requests in flight on
 * several connections); a file shorter than the export still reads its tail
 * as zeros (the copying path takes over); and a small READ beside them is
 * served by copying as before.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { nbd } from '../../src/export/index.ts';
import { startNbd } from '../helpers/nbd-export.ts';
import { simpleRequest } from '../helpers/nbd-raw.ts';

const run = promisify(execFile);
const KiB = 1024;
const MiB = 1024 * KiB;

test('spliced READs give the file\'s bytes: simple replies, structured ones under nbdcopy, and a short file\'s zero tail', { timeout: 120_000 }, async (t) => {
  // Unix-socket connections splice by default; TCP ones only with spliceOverTcp.
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
