/**
 * The mirror of an attached volume's move (src/volume/live-move.ts): writes
 * racing the copy land on both sides, so when the copy ends the destination
 * reads exactly as the source; fencing follows begin and end.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { MemoryDriver } from '../../../src/drivers/memory/memory-driver.ts';
import type { VolumeHandle } from '../../../src/drivers/index.ts';
import { LiveMove, LiveMoves } from '../../../src/volume/live-move.ts';

const MiB = 1024 * 1024;

async function pair(): Promise<{ source: VolumeHandle; dest: VolumeHandle; check: VolumeHandle; checkDest: VolumeHandle }> {
  const a = new MemoryDriver({ poolName: 'a' });
  const b = new MemoryDriver({ poolName: 'b' });
  const vol = { id: 'v1', sizeGiB: 1 };
  await a.createVolume(vol);
  await b.createVolume(vol);
  return { source: await a.openVolume(vol), dest: await b.openVolume(vol), check: await a.openVolume(vol), checkDest: await b.openVolume(vol) };
}

test('writes, zeros and trims racing the copy leave the destination equal to the source', async () => {
  await fc.assert(fc.asyncProperty(
    fc.array(fc.record({
      kind: fc.constantFrom('write', 'zero', 'trim'),
      offset: fc.integer({ min: 0, max: 40 * MiB }),
      length: fc.integer({ min: 1, max: 6 * MiB }),
      byte: fc.integer({ min: 1, max: 255 }),
      at: fc.integer({ min: 0, max: 30 }),
    }), { minLength: 1, maxLength: 25 }),
    async (ops) => {
      const { source, dest, check, checkDest } = await pair();
      // Data on the source before the move, across chunk boundaries.
      await check.write(3 * MiB, Buffer.alloc(5 * MiB, 7));
      const move = new LiveMove(source, dest);
      const views = [move.view(), move.view()];
      const copying = move.copy();
      await Promise.all(ops.map(async (op, i) => {
        const view = views[i % 2]!;
        // Spread the writes over the copy's run.
        for (let k = 0; k < op.at; k++) await new Promise((r) => setImmediate(r));
        if (op.kind === 'write') await view.write(op.offset, Buffer.alloc(op.length, op.byte));
        else if (op.kind === 'zero') await view.writeZeroes!(op.offset, op.length, true);
        else await view.trim!(op.offset, op.length);
      }));
      await copying;
      const size = 48 * MiB;
      assert.ok((await checkDest.read(0, size)).equals(await check.read(0, size)), 'the destination differs from the source');
      await move.close();
    },
  ), { numRuns: 25, seed: 1202 });
});

test('a write to the chunk the copier holds waits for it: the copier never writes stale data over it', async () => {
  const { source, dest, check, checkDest } = await pair();
  await check.write(0, Buffer.alloc(MiB, 1));
  // The copier's first read takes its data, then stalls until the write below has been issued.
  let readTaken!: () => void;
  const taken = new Promise<void>((r) => { readTaken = r; });
  let letGo!: () => void;
  const released = new Promise<void>((r) => { letGo = r; });
  let first = true;
  const stalling: VolumeHandle = {
    ...source,
    read: async (offset, length) => {
      const data = Buffer.from(await source.read(offset, length));
      if (first) { first = false; readTaken(); await released; }
      return data;
    },
  };
  const move = new LiveMove(stalling, dest);
  const copying = move.copy();
  await taken;
  const writing = move.view().write(4096, Buffer.alloc(4096, 2));
  for (let k = 0; k < 10; k++) await new Promise((r) => setImmediate(r));
  letGo();
  await Promise.all([copying, writing]);
  assert.equal((await check.read(4096, 1))[0], 2);
  assert.equal((await checkDest.read(4096, 1))[0], 2, 'the copy wrote the chunk as it was before the write');
});

test('the copy asks for block status again where an answer stopped short, and copies the whole chunk', async () => {
  const { source, dest, check, checkDest } = await pair();
  await check.write(0, Buffer.alloc(4 * MiB, 5));
  // A source that describes at most 256 KiB per answer (a server may describe less than asked).
  const short: VolumeHandle = { ...source, blockStatus: async (offset, length) => (await source.blockStatus!(offset, Math.min(length, 256 * 1024))) };
  await new LiveMove(short, dest).copy();
  assert.ok((await checkDest.read(0, 4 * MiB)).equals(await check.read(0, 4 * MiB)), 'part of the chunk was not copied');
});

test('a view reads the source and has no fd (its connections stay off the native plane)', async () => {
  const { source, dest, check } = await pair();
  await check.write(0, Buffer.alloc(4096, 9));
  const view = new LiveMove(source, dest).view();
  assert.equal(view.fd, undefined);
  assert.equal((await view.read(0, 4096))[0], 9);
});

test('begin fences the volume after the mirror is in place; end fences it after the mirror is gone', async () => {
  const { source, dest } = await pair();
  const seen: string[] = [];
  const moves = new LiveMoves({ fenceVolume: async (id) => { seen.push(`${id}:${moves.has(id) ? 'mirrored' : 'direct'}`); } });
  await moves.begin('v1', new LiveMove(source, dest));
  assert.ok(moves.open('v1'), 'a connection opening the export gets the mirror');
  await moves.end('v1');
  assert.equal(moves.open('v1'), undefined);
  await moves.end('v1');
  assert.deepEqual(seen, ['v1:mirrored', 'v1:direct']);
});

test('a copy of given ranges writes only those (zeroing holes within them) and counts the data bytes written', async () => {
  const { source, dest, check, checkDest } = await pair();
  // The destination holds the source everywhere but in two ranges: one changed, one that became a hole.
  await check.write(0, Buffer.alloc(10 * MiB, 3));
  await checkDest.write(0, Buffer.alloc(10 * MiB, 3));
  await check.write(MiB, Buffer.alloc(MiB, 9));
  await check.writeZeroes!(6 * MiB, MiB, true);
  // Outside the ranges the destination differs on purpose: the copy must not touch it.
  await checkDest.write(8 * MiB, Buffer.alloc(MiB, 5));
  const move = new LiveMove(source, dest);
  const progress: number[] = [];
  const bytes = await move.copy((p) => progress.push(p.doneBytes), { zeroHoles: true, ranges: [{ offset: MiB, length: MiB }, { offset: 6 * MiB, length: MiB }] });
  assert.equal(bytes, MiB, 'the changed MiB, not the zeroed one');
  assert.deepEqual(progress.at(-1), 2 * MiB);
  assert.ok((await checkDest.read(MiB, MiB)).equals(Buffer.alloc(MiB, 9)));
  assert.ok((await checkDest.read(6 * MiB, MiB)).equals(Buffer.alloc(MiB)));
  assert.ok((await checkDest.read(8 * MiB, MiB)).equals(Buffer.alloc(MiB, 5)), 'outside the ranges nothing was written');
  await move.close();
});
