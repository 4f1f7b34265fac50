/**
 * System calls Node's fs lacks, from Basalt's own Node-API addon
 * (`native/basalt_io.c`, built from source by `npm ci` through node-gyp):
 * lseek with SEEK_DATA/SEEK_HOLE, fallocate (punch hole, zero range), the
 * FIEMAP extent map (which blocks a reflink shares), and
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

/** posix_fadvise(2) advice: drop the range's clean pages (its dirty ones are written back first). */
export const POSIX_FADV_DONTNEED = 4;

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

/** One extent of a file's map (FS_IOC_FIEMAP): where `[logical, logical + length)` sits on the device. */
export interface MappedExtent { logical: number; physical: number; length: number; flags: number }

/**
 * Extent flags under which `physical` does not name the blocks for good
 * (unknown, delayed allocation, encoded, inline, tail-packed): such an
 * extent is never taken as shared.
 */
const UNSTABLE_EXTENT = 0x2 | 0x4 | 0x8 | 0x200 | 0x400;

/**
 * The extent map of `[offset, offset + length)` of the open file `fd` (flush
 * it first: dirty pages may sit over blocks still shared), or undefined when
 * the filesystem has no FIEMAP.
 */
export function mappedExtents(fd: number, offset: number, length: number): MappedExtent[] | undefined {
  const r = addon.fiemap(fd, offset, length);
  if (typeof r === 'number') return undefined;
  const out: MappedExtent[] = [];
  for (let i = 0; i + 3 < r.length; i += 4) out.push({ logical: r[i]!, physical: r[i + 1]!, length: r[i + 2]!, flags: r[i + 3]! });
  return out;
}

/**
 * The ranges of `[0, end)` where two files' extent maps may hold different
 * bytes: everywhere except where both are holes, or both map to the same
 * physical blocks (shared by a reflink, so the same bytes). Sorted, merged.
 */
export function differingRanges(a: readonly MappedExtent[], b: readonly MappedExtent[], end: number): Array<{ offset: number; length: number }> {
  const out: Array<{ offset: number; length: number }> = [];
  let i = 0;
  let j = 0;
  for (let pos = 0; pos < end;) {
    while (i < a.length && a[i]!.logical + a[i]!.length <= pos) i++;
    while (j < b.length && b[j]!.logical + b[j]!.length <= pos) j++;
    const ea = i < a.length && a[i]!.logical <= pos ? a[i] : undefined;
    const eb = j < b.length && b[j]!.logical <= pos ? b[j] : undefined;
    let next = end;
    for (const e of [a[i], b[j]]) if (e) next = Math.min(next, e.logical > pos ? e.logical : e.logical + e.length);
    const same = (!ea && !eb) || (ea !== undefined && eb !== undefined && ((ea.flags | eb.flags) & UNSTABLE_EXTENT) === 0
      && ea.physical - ea.logical === eb.physical - eb.logical);
    if (!same) {
      const last = out[out.length - 1];
      if (last && last.offset + last.length === pos) last.length += next - pos;
      else out.push({ offset: pos, length: next - pos });
    }
    pos = next;
  }
  return out;
}

/** posix_fadvise(2) on an open file: 0 or the error number. */
export function fadvise(fd: number, offset: number, length: number, advice: number): number {
  return addon.fadvise(fd, offset, length, advice);
}
