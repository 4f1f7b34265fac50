/**
 * Why a start (or `basalt db migrate`) failed, when it failed because the
 * database's filesystem is full or failing: one line naming the directory,
 * for the command to print instead of a stack trace.
 */
import fs from 'node:fs';
import path from 'node:path';
import { BasaltError } from '../errors/index.ts';
import { asWriteRefusal } from './write-refusals.ts';

/**
 * Below this many free bytes a filesystem counts as full, whatever error it
 * gave: SQLite answers a full disk with SQLITE_IOERR when its shared-memory
 * file (32 KiB) cannot be made at open, and a filesystem may keep a few blocks.
 */
const FULL_BELOW_BYTES = 1024 * 1024;

/** Free bytes of the filesystem of `dir` for an unprivileged writer, or undefined when it cannot be told. */
function freeBytes(dir: string): number | undefined {
  try {
    const s = fs.statfsSync(dir);
    return s.bavail * s.bsize;
  } catch {
    return undefined;
  }
}

/**
 * The error to report for `err`, thrown while opening or migrating the
 * database at `connection` (or starting the roles on it), when `err` or one of
 * its causes says the filesystem is full or failing (see `asWriteRefusal`);
 * undefined for any other error. Its message names the directory (the one the
 * failing file is in, else the SQLite database's) and says what to do; the
 * original error is its `cause`. The code is that of the refused write:
 * STATE_DIRECTORY_FULL, STATE_DIRECTORY_UNWRITABLE or DATABASE_DISK_FULL.
 */
export function startRefusal(err: unknown, connection: string): BasaltError | undefined {
  let refusal;
  let failing: string | undefined;
  for (let e: unknown = err, depth = 0; e && depth < 10 && !refusal; e = (e as { cause?: unknown }).cause, depth++) {
    refusal = asWriteRefusal(e);
    const p = (e as { path?: unknown }).path;
    if (typeof p === 'string') failing = p;
  }
  if (!refusal) return undefined;
  if (refusal.store === 'postgresql') {
    return new BasaltError('DATABASE_DISK_FULL', 'The disk of Basalt\'s PostgreSQL database is full: free space on the database server, then start Basalt again.', { cause: err });
  }
  const file = /^sqlite:\/\/(.+)$/.exec(connection)?.[1];
  const dir = failing ? path.dirname(path.resolve(failing)) : file && file !== ':memory:' ? path.dirname(path.resolve(file)) : undefined;
  const free = dir === undefined ? undefined : freeBytes(dir);
  const full = refusal.full || (free !== undefined && free < FULL_BELOW_BYTES);
  const where = dir === undefined ? 'Basalt\'s state directory' : `Basalt's state directory ${dir}`;
  return full
    ? new BasaltError('STATE_DIRECTORY_FULL', `${where} is full${free === undefined ? '' : ` (${Math.floor(free / 1024)} KiB free)`}: free space there, then start Basalt again.`, { cause: err })
    : new BasaltError('STATE_DIRECTORY_UNWRITABLE', `${where} cannot be written (an I/O error): repair it, then start Basalt again.`, { cause: err });
}
