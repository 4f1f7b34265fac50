/**
 * Episodes of refused writes: while the state directory is full (or failing),
 * every write to the SQLite database is refused with a
 * {@link StateDirectoryUnwritableError}; so is a write PostgreSQL refuses
 * because its disk is full. Heartbeats, job claims and API writes
 * all hit it, several times a second; this class logs the episode once when it
 * begins and once when a write succeeds again, so callers log each refusal
 * quietly (debug) instead of flooding the log.
 */
import { StateDirectoryUnwritableError, type WriteRefusalStore } from '../errors/index.ts';

/** Where the start and end of an episode are logged (a pino logger fits). */
export interface WriteRefusalLog {
  /** The start of an episode; when absent, at `warn`. */
  error?(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

/** SQLite result codes (and errno codes) that mean the filesystem is full. */
const FULL_CODES: ReadonlySet<string> = new Set(['SQLITE_FULL', 'ENOSPC', 'EDQUOT']);

/**
 * PostgreSQL's SQLSTATE for a full disk (disk_full: a table, index or temporary
 * file could not grow). Its neighbours in class 53 stay server errors:
 * out_of_memory and too_many_connections are not a disk an operator frees, and
 * a full WAL disk is no refused write (the server stops, and the API answers
 * what a lost database gives).
 */
const PG_DISK_FULL = '53100';

/**
 * The {@link StateDirectoryUnwritableError} for an error the database (or the
 * flush of its log) raised, or undefined when it is not about the state
 * directory's filesystem: SQLITE_FULL, ENOSPC and EDQUOT say it is full;
 * SQLITE_IOERR and its extended codes (e.g. SQLITE_IOERR_SHMSIZE, what a full
 * tmpfs gives when the shared-memory file cannot grow) say it failed to write;
 * PostgreSQL's SQLSTATE 53100 (disk_full) says its disk is full.
 */
export function asWriteRefusal(err: unknown): StateDirectoryUnwritableError | undefined {
  if (err instanceof StateDirectoryUnwritableError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return undefined;
  if (FULL_CODES.has(code)) return new StateDirectoryUnwritableError(true, { cause: err });
  if (code === PG_DISK_FULL) return new StateDirectoryUnwritableError(true, { cause: err, store: 'postgresql' });
  if (code === 'SQLITE_IOERR' || code.startsWith('SQLITE_IOERR_') || code === 'EIO') return new StateDirectoryUnwritableError(false, { cause: err });
  return undefined;
}

/** The episodes of one database. */
export class WriteRefusals {
  #refused = 0;
  #since: number | undefined;
  #store: WriteRefusalStore = 'state-directory';

  /** @param log where each episode's start and end go; default: not logged. */
  constructor(private readonly log?: WriteRefusalLog) {}

  /** Whether writes are being refused now (since the last refusal, no write succeeded). */
  get active(): boolean {
    return this.#since !== undefined;
  }

  /** Records a refused write; the first of an episode is logged at error with its cause. */
  refused(err: StateDirectoryUnwritableError): void {
    this.#refused++;
    if (this.#since !== undefined) return;
    this.#since = Date.now();
    this.#store = err.store;
    const log = this.log;
    if (!log) return;
    (log.error ?? log.warn).call(log, { err: err.cause ?? err, full: err.full, store: err.store }, err.store === 'postgresql'
      ? 'PostgreSQL database disk full: database writes are refused until space is freed on the database server; reads keep working'
      : err.full
        ? 'state directory full: database writes are refused until space is freed; reads keep working'
        : 'state directory cannot be written: database writes are refused until it can be; reads keep working');
  }

  /** Records a write that succeeded and is durable; ends an episode (logged with its length and count). */
  wrote(): void {
    if (this.#since === undefined) return;
    this.log?.info({ refused: this.#refused, durationMs: Date.now() - this.#since }, this.#store === 'postgresql' ? 'PostgreSQL database writable again: database writes work' : 'state directory writable again: database writes work');
    this.#since = undefined;
    this.#refused = 0;
  }
}
