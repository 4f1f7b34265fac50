/**
 * Copying volume files without filling holes: a reflink where the filesystem
 * can share extents (XFS with reflink=1, btrfs), else a copy of only the data
 * extents found with `lseek(SEEK_DATA/SEEK_HOLE)`, skipping all-zero chunks.
 * `lseek` is called through koffi: Node's fs has no SEEK_DATA.
 */
import fs from 'node:fs/promises';
import { constants } from 'node:fs';
import koffi from 'koffi';
import type { CopyMethod } from '../volume-driver.ts';

const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const CHUNK = 4 * 1024 * 1024;

let lseekFn: ((fd: number, offset: number, whence: number) => number) | undefined;
function lseek(fd: number, offset: number, whence: number): number {
  lseekFn ??= koffi.load('libc.so.6').func('int64_t lseek(int, int64_t, int)') as (fd: number, offset: number, whence: number) => number;
  return Number(lseekFn(fd, offset, whence));
}

let fallocateFn: ((fd: number, mode: number, offset: number, length: number) => number) | undefined;
let errnoFn: (() => number) | undefined;

/** fallocate(2) modes. */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

/**
 * Calls fallocate(2) on `fd`; returns 0, or the errno (e.g. EOPNOTSUPP when
 * the filesystem lacks the mode, so the caller can fall back).
 */
export function fallocate(fd: number, mode: number, offset: number, length: number): number {
  if (!fallocateFn) {
    const libc = koffi.load('libc.so.6');
    fallocateFn = libc.func('int fallocate(int, int, int64_t, int64_t)') as unknown as typeof fallocateFn;
    const loc = libc.func('int *__errno_location()');
    errnoFn = () => koffi.decode(loc(), 'int') as number;
  }
  return fallocateFn!(fd, mode, offset, length) === 0 ? 0 : errnoFn!();
}

/**
 * The data/hole extents of `[offset, offset + length)` of the open file `fd`
 * of `size` bytes, from SEEK_DATA/SEEK_HOLE. Holes read as zeros.
 */
export function dataExtents(fd: number, size: number, offset: number, length: number): Array<{ length: number; hole: boolean }> {
  const end = Math.min(size, offset + length);
  const out: Array<{ length: number; hole: boolean }> = [];
  let pos = offset;
  while (pos < end) {
    let data = lseek(fd, pos, SEEK_DATA);
    if (data < 0 || data > end) data = end; // no more data in range
    if (data > pos) {
      out.push({ length: data - pos, hole: true });
      pos = data;
      continue;
    }
    const hole = Math.min(lseek(fd, pos, SEEK_HOLE), end);
    if (hole <= pos) break;
    out.push({ length: hole - pos, hole: false });
    pos = hole;
  }
  return out;
}

/** Errors that mean "this filesystem cannot reflink", not a real failure. */
const NO_REFLINK = new Set(['ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'EINVAL', 'ENOSYS', 'ENOTTY', 'EBADF']);

/** Tries a reflink of `src` to `dst`; false when the filesystem cannot. */
export async function tryReflink(src: string, dst: string): Promise<boolean> {
  try {
    await fs.copyFile(src, dst, constants.COPYFILE_FICLONE_FORCE);
    return true;
  } catch (err) {
    if (NO_REFLINK.has((err as NodeJS.ErrnoException).code ?? '')) {
      await fs.rm(dst, { force: true });
      return false;
    }
    throw err;
  }
}

/** Copies only the data extents of `src` into a new sparse file `dst` of the same size. */
export async function copyDataExtents(src: string, dst: string): Promise<void> {
  const input = await fs.open(src, 'r');
  const output = await fs.open(dst, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
  try {
    const { size } = await input.stat();
    await output.truncate(size);
    const buf = Buffer.allocUnsafe(CHUNK);
    const zero = Buffer.alloc(CHUNK);
    let offset = 0;
    while (offset < size) {
      const data = lseek(input.fd, offset, SEEK_DATA);
      if (data < 0) break; // ENXIO: no data past offset
      const hole = Math.min(lseek(input.fd, data, SEEK_HOLE), size);
      for (let pos = data; pos < hole; pos += CHUNK) {
        const len = Math.min(CHUNK, hole - pos);
        const { bytesRead } = await input.read(buf, 0, len, pos);
        if (bytesRead === 0) break;
        // A chunk of zeros stays a hole in the copy.
        if (buf.compare(zero, 0, bytesRead, 0, bytesRead) !== 0) await output.write(buf, 0, bytesRead, pos);
      }
      offset = hole;
    }
    await output.sync();
  } finally {
    await input.close();
    await output.close();
  }
}

/**
 * Copies `src` to `dst` (replacing it atomically via a temporary name), then
 * sizes it to `sizeBytes`. Returns how the data was copied.
 */
export async function copyVolumeFile(src: string, dst: string, sizeBytes: number, allowReflink: boolean): Promise<CopyMethod> {
  const tmp = `${dst}.partial`;
  await fs.rm(tmp, { force: true });
  let method: CopyMethod = 'copy';
  if (allowReflink && await tryReflink(src, tmp)) method = 'reflink';
  else await copyDataExtents(src, tmp);
  const handle = await fs.open(tmp, constants.O_WRONLY);
  try {
    const { size } = await handle.stat();
    if (size !== sizeBytes) await handle.truncate(sizeBytes);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, dst);
  return method;
}
