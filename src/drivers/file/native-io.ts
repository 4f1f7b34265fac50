/**
 * System calls Node's fs lacks, called through koffi: lseek with
 * SEEK_DATA/SEEK_HOLE, fallocate (punch hole, zero range), and
 * preadv2/pwritev2 with RWF_NOWAIT — the data path's fast path, which serves
 * a request from the page cache on the event loop in about a microsecond and
 * answers "would block" instead of waiting for the disk (the caller then goes
 * through the thread pool).
 */
import koffi from 'koffi';

const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const RWF_NOWAIT = 0x08;
const EAGAIN = 11;

/** fallocate(2) modes. */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

type Fn = (...args: unknown[]) => number | bigint;
let libc: { lseek: Fn; fallocate: Fn; preadv2: Fn; pwritev2: Fn; errno: () => number } | undefined;

function lib(): NonNullable<typeof libc> {
  if (!libc) {
    const l = koffi.load('libc.so.6');
    koffi.struct('iovec', { iov_base: 'void *', iov_len: 'size_t' });
    const loc = l.func('int *__errno_location()');
    libc = {
      lseek: l.func('int64_t lseek(int, int64_t, int)') as unknown as Fn,
      fallocate: l.func('int fallocate(int, int, int64_t, int64_t)') as unknown as Fn,
      preadv2: l.func('int64_t preadv2(int, const iovec *, int, int64_t, int)') as unknown as Fn,
      pwritev2: l.func('int64_t pwritev2(int, const iovec *, int, int64_t, int)') as unknown as Fn,
      errno: () => koffi.decode(loc(), 'int') as number,
    };
  }
  return libc;
}

/** The next data extent at or after `offset` of a file of `size` bytes, or undefined. */
export function lseekData(fd: number, offset: number, size: number): { data: number; hole: number } | undefined {
  const data = Number(lib().lseek(fd, offset, SEEK_DATA));
  if (data < 0 || data >= size) return undefined; // ENXIO: no data past offset
  return { data, hole: Math.min(Number(lib().lseek(fd, data, SEEK_HOLE)), size) };
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
  return Number(lib().fallocate(fd, mode, offset, length)) === 0 ? 0 : lib().errno();
}

/** Whether pwritev2(RWF_NOWAIT) works here; switched off at its first EOPNOTSUPP. */
let nowaitWrites = true;

/**
 * Reads into `buf` at `offset` only if the page cache holds it: returns the
 * bytes read, or -1 when the read would block (or failed: the slow path will
 * report the error).
 */
export function readNowait(fd: number, buf: Buffer, offset: number): number {
  const n = Number(lib().preadv2(fd, [{ iov_base: buf, iov_len: buf.length }], 1, offset, RWF_NOWAIT));
  return n >= 0 ? n : -1;
}

/** Writes `buf` at `offset` only if that can be done without blocking; -1 otherwise. */
export function writeNowait(fd: number, buf: Buffer, offset: number): number {
  if (!nowaitWrites) return -1;
  const n = Number(lib().pwritev2(fd, [{ iov_base: buf, iov_len: buf.length }], 1, offset, RWF_NOWAIT));
  if (n >= 0) return n;
  if (lib().errno() !== EAGAIN) nowaitWrites = false; // EOPNOTSUPP on this kernel/filesystem: stop trying
  return -1;
}
