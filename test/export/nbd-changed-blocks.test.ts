/**
 * Changed-block tracking on every NBD plane (issue 15, part 3): WRITE,
 * WRITE_ZEROES and TRIM served by native threads, the event loop and TLS set
 * the blocks they touch in the volume's bits, reads set none; a cut takes the
 * bits and starts a new generation; the bits survive a clean stop and a
 * restart; a file left `open` by a killed process counts as wholly changed.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import pino from 'pino';
import { ChangedBlockTracker, nbd } from '../../src/export/index.ts';
import { PLANES, startNbd } from '../helpers/nbd-export.ts';
import { simpleRequest } from '../helpers/nbd-raw.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const log = pino({ level: 'silent' });

/**
 * A temporary directory and a way to open trackers on it. At the end, what
 * was handed to `after` runs first (the servers that write through the
 * trackers stop), then the trackers close, then the directory goes: a closed
 * writer or an ended cut queues a save that runs in the background, and it
 * must not write into a directory being removed.
 */
function tempDir(t: TestContext): { directory: string; open(): Promise<ChangedBlockTracker>; after(fn: () => unknown): void } {
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-cbt-'));
  const trackers: ChangedBlockTracker[] = [];
  const first: (() => unknown)[] = [];
  t.after(async () => {
    for (const fn of first.reverse()) await fn();
    for (const tracker of trackers) await tracker.close();
    fs.rmSync(directory, { recursive: true, force: true });
  });
  return {
    directory,
    async open() {
      const tracker = await ChangedBlockTracker.open({ directory, log });
      trackers.push(tracker);
      return tracker;
    },
    after: (fn) => first.push(fn),
  };
}

for (const plane of PLANES) {
  test(`${plane}: writes, zeroes and trims are recorded at 16 KiB, reads are not; a cut starts a new generation`, async (t) => {
    const dir = tempDir(t);
    const tracker = await dir.open();
    const f = await startNbd({ after: dir.after }, { plane, volumes: [{ name: 'v', sizeGiB: 1 }], options: { changedBlocks: tracker } });
    const id = f.ids.get('v')!;
    await (await tracker.cut(id, 'b0')).commit(); // the base: a backup taken before the writes

    const c = await f.connect('v');
    assert.equal((await simpleRequest(c, nbd.CMD.WRITE, BigInt(MiB + 100), 4096, Buffer.alloc(4096, 1))).error, 0);
    assert.equal((await simpleRequest(c, nbd.CMD.WRITE_ZEROES, BigInt(8 * MiB), 64 * KiB)).error, 0);
    assert.equal((await simpleRequest(c, nbd.CMD.TRIM, BigInt(100 * MiB), 16 * KiB)).error, 0);
    assert.equal((await simpleRequest(c, nbd.CMD.READ, BigInt(500 * MiB), 64 * KiB)).error, 0);
    assert.equal((await simpleRequest(c, nbd.CMD.WRITE, BigInt(1024 * MiB - 4096), 4096, Buffer.alloc(4096, 2))).error, 0);

    const cut = await tracker.cut(id, 'b1');
    assert.deepEqual(cut.changedSince('b0'), [
      { offset: MiB, length: 16 * KiB }, // 4 KiB at 1 MiB + 100 spans one block
      { offset: 8 * MiB, length: 64 * KiB },
      { offset: 100 * MiB, length: 16 * KiB },
      { offset: 1024 * MiB - 16 * KiB, length: 16 * KiB },
    ]);
    assert.equal(cut.changedSince('other'), undefined, 'relative to another backup: not known');
    await cut.commit();

    // After the cut, a write goes to the new generation only.
    assert.equal((await simpleRequest(c, nbd.CMD.WRITE, BigInt(3 * MiB), 32 * KiB, Buffer.alloc(32 * KiB, 3))).error, 0);
    const next = await tracker.cut(id, 'b2');
    assert.deepEqual(next.changedSince('b1'), [{ offset: 3 * MiB, length: 32 * KiB }]);
    await next.abort();
    c.sock.destroy();
  });
}

test('a failed backup gives its bits back; a later cut still sees them', async (t) => {
  const tracker = await tempDir(t).open();
  await (await tracker.cut('vol', 'b0')).commit();
  const w = await tracker.writer('vol', 64 * MiB);
  w.mark(0, 1);
  const failed = await tracker.cut('vol', 'b1');
  assert.deepEqual(failed.changedSince('b0'), [{ offset: 0, length: 16 * KiB }]);
  w.mark(32 * KiB, 1); // while the failed backup ran
  await failed.abort();
  const retry = await tracker.cut('vol', 'b2');
  assert.deepEqual(retry.changedSince('b0'), [{ offset: 0, length: 16 * KiB }, { offset: 32 * KiB, length: 16 * KiB }], 'relative to the parent of the failed one: both writes');
  assert.equal(retry.changedSince('b1'), undefined, 'the failed backup is no base');
  await retry.commit();
  w.close();
});

test('marked wholly changed (a restore, a revert): the next cut knows nothing', async (t) => {
  const tracker = await tempDir(t).open();
  await (await tracker.cut('vol', 'b0')).commit();
  await tracker.markAllChanged('vol', 'test');
  const cut = await tracker.cut('vol', 'b1');
  assert.equal(cut.changedSince('b0'), undefined);
  await cut.commit();
  const after = await tracker.cut('vol', 'b2');
  assert.deepEqual(after.changedSince('b1'), [], 'the generation after the backup counts again');
});

test('the bits survive a clean stop; a file left open by a crash counts as wholly changed', async (t) => {
  const { directory, open } = tempDir(t);
  const first = await open();
  await (await first.cut('clean', 'b0')).commit();
  await (await first.cut('crashed', 'b0')).commit();
  const w1 = await first.writer('clean', 64 * MiB);
  w1.mark(5 * MiB, 10);
  w1.close();
  const w2 = await first.writer('crashed', 64 * MiB);
  w2.mark(5 * MiB, 10);
  // The writer of 'crashed' never closes: its file says open, as after a SIGKILL.
  const pending = await first.cut('clean', 'b1'); // a backup in flight when the process died: given back at start
  await first.close();
  assert.match(fs.readFileSync(path.join(directory, 'crashed')).subarray(0, 200).toString(), /"open":true/);

  const second = await open();
  const clean = await second.cut('clean', 'b2');
  assert.deepEqual(clean.changedSince('b0'), [{ offset: 5 * MiB, length: 16 * KiB }]);
  assert.equal((await second.cut('crashed', 'b2')).changedSince('b0'), undefined);
  assert.equal((await second.cut('unknown', 'b2')).changedSince('b0'), undefined, 'a volume with no file: everything changed');
  void pending;
});
