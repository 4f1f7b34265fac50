/**
 * Group commit for SQLite: commits return once they are on stable storage,
 * and commits that finish while a flush runs share the next one.
 *
 * SQLite in WAL mode with `synchronous=FULL` fsyncs the write-ahead log inside
 * every COMMIT, on the one thread that runs JavaScript: each create paid about
 * five such stalls (bench/api profile) and no two requests could share one.
 * With `synchronous=NORMAL` a COMMIT only writes its frames to the log, and
 * SQLite still syncs the log before each checkpoint copies it into the
 * database (so the database itself never corrupts). This class adds the
 * missing step: whoever depends on commits being durable (an API answer, a
 * job about to act) waits for an `fdatasync` of the log file, run in libuv's
 * thread pool, that started after those commits — exactly the guarantee of
 * FULL. What changes is that one flush covers every commit written before it
 * started, commits that nobody outside waits on (a claim, a heartbeat) cost
 * no flush of their own, and the event loop keeps serving requests meanwhile.
 */
import fs from 'node:fs/promises';
import { SharedFlush } from '../common/index.ts';

/** Flushes a file's data to stable storage (injectable for tests). */
export type Flush = (file: fs.FileHandle) => Promise<void>;

/** One database's commit sequence and the flushes of its log that make it durable. */
export class GroupCommit {
  readonly #flush: SharedFlush;
  #log: Promise<fs.FileHandle> | undefined;

  /**
   * @param logPath the write-ahead log (`<database>-wal`); it exists from the first write while a connection is open.
   * @param flush how a flush is done; default `fdatasync`.
   */
  constructor(private readonly logPath: string, flush: Flush = (f) => f.datasync()) {
    this.#flush = new SharedFlush(async () => flush(await this.#openLog()));
  }

  /** Flushes run so far (exposed for tests and metrics). */
  get flushes(): number {
    return this.#flush.flushes;
  }

  /** Notes a commit that just wrote; returns its number, to pass to {@link durable}. */
  noteCommit(): number {
    return this.#flush.note();
  }

  /** The number of the latest commit noted. */
  get committed(): number {
    return this.#flush.noted;
  }

  /**
   * Resolves once commit `seq` is on stable storage: joins the flush in
   * progress when that one started after the commit, or starts the next.
   * @throws Error from the flush (EIO, ENOSPC): the commit happened but is not known to be durable, and the caller must not say it is.
   */
  durable(seq: number): Promise<void> {
    return this.#flush.until(seq);
  }

  async #openLog(): Promise<fs.FileHandle> {
    this.#log ??= fs.open(this.logPath, 'r');
    try {
      return await this.#log;
    } catch (err) {
      this.#log = undefined; // opened again by the next flush
      throw err;
    }
  }

  /** Flushes what is left, then closes the log file handle (the database closes after). */
  async close(): Promise<void> {
    await this.durable(this.committed).catch(() => undefined); // SQLite's own close checkpoints and syncs as well
    await this.#flush.settled();
    const log = this.#log;
    this.#log = undefined;
    await (await log?.catch(() => undefined))?.close();
  }
}
