/**
 * System calls Node's fs lacks, from Basalt's own Node-API addon
 * (`native/basalt_io.c`, built from source by `npm ci` through node-gyp):
 * lseek with SEEK_DATA/SEEK_HOLE, fallocate (punch hole, zero range), and
 * preadv2/pwritev2 with RWF_NOWAIT — the data path's fast path, which serves
 * a request from the page cache on the event loop in about a microsecond and
 * answers "would block" instead of waiting for the disk (the caller then goes
 * through the thread pool).
 */
import { addon } from '../../common/index.ts';

/** fallocate(2) modes. */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

/** ENXIO, negated as the addon's seek calls return it: no data past the offset. */
const NO_DATA = -6;

/**
 * The next data extent at or after `offset` of a file of `size` bytes, or
 * undefined when there is none. Only ENXIO means "no data": any other
 * failure of lseek (ESPIPE, EINVAL where the filesystem lacks SEEK_DATA, EIO)
 * reports the rest of the file as data — reading and copying it costs time,
 * but calling it a hole would make readers skip real data as zeros.
 */
export function lseekData(fd: number, offset: number, size: number): { data: number; hole: number } | undefined {
  const data = addon.seekData(fd, offset);
  if (data === NO_DATA) return undefined;
  if (data < 0) return { data: offset, hole: size };
  if (data >= size) return undefined;
  const hole = addon.seekHole(fd, data);
  return { data, hole: hole < 0 ? size : Math.min(hole, size) };
}

/**
 * The data/hole extents of `[offset, offset + length)` of the open file `fd`
 * of `size` bytes. Holes read as zeros.
 */
export function dataExtentsOf(fd: number, size: number, offset: number, length: number): Array<{ length: number; hole: boolean }> {
  const end = Math.min(size, offset + length);
  const out: Array<{ length: number; hole: boolean }> = [];
  let pos = offset;
  while (pos < end) {
    const next = lseekData(fd, pos, size);
    const data = next ? Math.min(next.data, end) : end;
    if (data > pos) {
      out.push({ length: data - pos, hole: true });
      pos = data;
      continue;
    }
    const hole = Math.min(next!.hole, end);
    if (hole <= pos) break;
    out.push({ length: hole - pos, hole: false });
    pos = hole;
  }
  return out;
}

/**
 * Calls fallocate(2); returns 0, or the errno (e.g. EOPNOTSUPP when the
 * filesystem lacks the mode, so the caller can fall back).
 */
export function fallocate(fd: number, mode: number, offset: number, length: number): number {
  return addon.fallocate(fd, mode, offset, length);
}

/** Whether pwritev2(RWF_NOWAIT) works here; switched off at its first error other than EAGAIN. */
let nowaitWrites = true;

/**
 * Reads into `buf` at `offset` only if the page cache holds it: returns the
 * bytes read, or -1 when the read would block (or failed: the slow path will
 * report the error).
 */
export function readNowait(fd: number, buf: Buffer, offset: number): number {
  return addon.preadNowait(fd, buf, offset);
}

/**
 * Writes `data` (one buffer, or up to 64 written in order) at `offset` only
 * if that can be done without blocking; -1 otherwise.
 */
export function writeNowait(fd: number, data: Buffer | readonly Buffer[], offset: number): number {
  if (!nowaitWrites) return -1;
  const n = addon.pwriteNowait(fd, data, offset);
  if (n === -2) nowaitWrites = false; // EOPNOTSUPP on this kernel/filesystem: stop trying
  return n < 0 ? -1 : n;
}
