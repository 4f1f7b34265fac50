/**
 * The file driver's lseek helpers (issue 13, defect 9): only ENXIO means "no
 * data"; any other failure of lseek(SEEK_DATA/SEEK_HOLE) reports data, never
 * a hole a reader would skip as zeros. And the comparison of two extent maps
 * behind the driver's changed extents.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { dataExtentsOf, differingRanges, lseekData } from '../../../../src/drivers/file/native-io.ts';
import { addon } from '../../../../src/common/index.ts';

function tmp(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-seek-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A FIFO open for reading and writing: lseek on it fails with ESPIPE. */
function fifo(t: TestContext): number {
  const f = path.join(tmp(t), 'fifo');
  execFileSync('mkfifo', [f]);
  const fd = fs.openSync(f, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  t.after(() => fs.closeSync(fd));
  return fd;
}

test('the addon returns the errno of a failed lseek, negated: ENXIO past the data, ESPIPE on a FIFO', (t) => {
  const file = path.join(tmp(t), 'sparse');
  fs.writeFileSync(file, '');
  fs.truncateSync(file, 1 << 20);
  const fd = fs.openSync(file, 'r');
  t.after(() => fs.closeSync(fd));
  assert.equal(addon.seekData(fd, 0), -os.constants.errno.ENXIO);
  assert.equal(addon.seekData(fifo(t), 0), -os.constants.errno.ESPIPE);
});

test('issue 13: an lseek that fails with anything but ENXIO reports data, not a hole', (t) => {
  const fd = fifo(t);
  assert.deepEqual(lseekData(fd, 4096, 65536), { data: 4096, hole: 65536 });
  assert.deepEqual(dataExtentsOf(fd, 65536, 0, 65536), [{ length: 65536, hole: false }]);
  assert.deepEqual(dataExtentsOf(fd, 65536, 8192, 4096), [{ length: 4096, hole: false }]);
});

test('holes and data of a sparse file, and no data past the last extent', (t) => {
  const file = path.join(tmp(t), 'sparse');
  const fd = fs.openSync(file, 'w+');
  t.after(() => fs.closeSync(fd));
  fs.ftruncateSync(fd, 4 << 20);
  fs.writeSync(fd, Buffer.alloc(65536, 1), 0, 65536, 1 << 20);
  assert.deepEqual(dataExtentsOf(fd, 4 << 20, 0, 4 << 20), [
    { length: 1 << 20, hole: true }, { length: 65536, hole: false }, { length: (3 << 20) - 65536, hole: true },
  ]);
  assert.equal(lseekData(fd, (1 << 20) + 65536, 4 << 20), undefined);
});

test('differingRanges: holes in both and blocks at the same place are the same; anything else differs, merged', () => {
  const e = (logical: number, physical: number, length: number, flags = 0) => ({ logical, physical, length, flags });
  // a: data [0, 8K) at 100K, data [16K, 24K) at 200K; b: the first shared, the second moved, new data at [40K, 44K).
  const a = [e(0, 100_000, 8192), e(16_384, 200_000, 8192)];
  const b = [e(0, 100_000, 4096), e(4096, 104_096, 4096), e(16_384, 300_000, 8192), e(40_960, 500_000, 4096)];
  assert.deepEqual(differingRanges(a, b, 65_536), [{ offset: 16_384, length: 8192 }, { offset: 40_960, length: 4096 }]);
  assert.deepEqual(differingRanges(a, a, 65_536), [], 'a file is the same as itself');
  assert.deepEqual(differingRanges([], [], 65_536), [], 'two holes are the same');
  // A shared extent seen through a different split, and one whose place is not final (delayed allocation).
  assert.deepEqual(differingRanges([e(0, 1000, 8192)], [e(0, 1000, 4096), e(4096, 5096, 4096, 0x4)], 8192), [{ offset: 4096, length: 4096 }]);
  // Data on one side only, up to the end; adjacent differing pieces merge.
  assert.deepEqual(differingRanges([e(0, 1000, 4096)], [e(0, 9000, 4096), e(4096, 13_096, 8192)], 16_384), [{ offset: 0, length: 12_288 }]);
});
