/**
 * Copying volume files without filling holes: a reflink where the filesystem
 * can share extents (XFS with reflink=1, btrfs), else a copy of only the data
 * extents found with `lseek(SEEK_DATA/SEEK_HOLE)` (see `native-io.ts`),
 * skipping all-zero chunks.
 */
import fs from 'node:fs/promises';
import { constants } from 'node:fs';
import { lseekData } from './native-io.ts';
import type { CopyMethod } from '../volume-driver.ts';

const CHUNK = 4 * 1024 * 1024;

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
      const next = lseekData(input.fd, offset, size);
      if (!next) break; // no data past offset
      const { data, hole } = next;
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
  // What an interrupted earlier attempt left is replaced; what this one leaves on failure is removed.
  await fs.rm(tmp, { force: true });
  try {
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
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
}
