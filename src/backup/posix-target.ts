/**
 * The `posix` backup target: objects as files under one directory (by default
 * `<state_dir>/backups`; any mounted filesystem, NFS included), each written
 * aside, flushed, renamed into place and its directory flushed.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { DriverError } from '../errors/index.ts';
import type { BackupTarget } from './backup-target.ts';

/** Errors that mean "try again later": the target is full or failing, not wrong. */
const RETRYABLE = new Set(['ENOSPC', 'EDQUOT', 'EIO', 'EAGAIN', 'EBUSY', 'ETIMEDOUT', 'ESTALE']);

/** Files aside of an object being written end with this (never a key's own ending: keys have no `~`). */
const ASIDE = '~partial';

/** A directory as a backup target. */
export class PosixTarget implements BackupTarget {
  readonly kind = 'posix';

  /** @param location the directory; made when missing. */
  constructor(readonly location: string) {}

  async put(key: string, data: Buffer): Promise<void> {
    const file = this.file(key);
    const aside = `${file}.${randomBytes(6).toString('hex')}${ASIDE}`;
    try {
      await fs.mkdir(path.dirname(file), { recursive: true });
      const fh = await fs.open(aside, 'wx');
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.rename(aside, file);
      await syncDirectory(path.dirname(file));
    } catch (err) {
      await fs.rm(aside, { force: true }).catch(() => undefined);
      throw this.failure(`store ${key}`, err);
    }
  }

  async get(key: string): Promise<Buffer | undefined> {
    try {
      return await fs.readFile(this.file(key));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw this.failure(`read ${key}`, err);
    }
  }

  async has(key: string): Promise<boolean> {
    try {
      await fs.access(this.file(key));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw this.failure(`look for ${key}`, err);
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await fs.rm(this.file(key), { force: true });
    } catch (err) {
      throw this.failure(`remove ${key}`, err);
    }
  }

  async list(prefix: string): Promise<string[]> {
    const out: string[] = [];
    const walk = async (rel: string): Promise<void> => {
      let entries: import('node:fs').Dirent[];
      try {
        entries = await fs.readdir(path.join(this.location, rel), { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw this.failure(`list ${prefix}`, err);
      }
      for (const e of entries) {
        const key = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) await walk(key);
        else if (!e.name.endsWith(ASIDE)) out.push(key);
      }
    };
    await walk(prefix.replace(/\/+$/, ''));
    return out;
  }

  private file(key: string): string {
    return path.join(this.location, ...key.split('/'));
  }

  /** A failure of the filesystem as a driver error: retryable when it is full or failing. */
  private failure(what: string, err: unknown): DriverError {
    const code = (err as NodeJS.ErrnoException).code;
    return new DriverError(`Backup target ${this.location}: cannot ${what}${code ? ` (${code})` : ''}`, { cause: err, retryable: code !== undefined && RETRYABLE.has(code) });
  }
}

/** Flushes a directory's entries (a rename is durable only then). */
async function syncDirectory(dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
