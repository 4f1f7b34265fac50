/**
 * Checkpoints of a SQLite database in WAL mode, run on a thread of their own.
 *
 * SQLite copies the write-ahead log back into the database file (a
 * checkpoint) inside whichever COMMIT pushes the log past 1000 pages: that
 * commit then writes a few megabytes and fsyncs both files, on the one thread
 * that serves requests, so one create in every fifty or so waited for all of
 * it (bench/api's p99). Here the serving connection never checkpoints by
 * itself (`wal_autocheckpoint = 0`); a second connection on a worker thread
 * runs a PASSIVE checkpoint once the log holds as many frames as SQLite's own
 * threshold (looked at every {@link CheckpointerOptions.everyMs}), which
 * copies what no reader still needs and never waits for, nor blocks, a writer.
 * Durability is unchanged: what a commit writes is in the log (flushed by
 * {@link GroupCommit}); a checkpoint only moves it, syncing the log before and
 * the database after, as SQLite's own would.
 *
 * If the thread cannot start or dies, the serving connection checkpoints by
 * itself again (`wal_autocheckpoint = 1000`, SQLite's default): slower, never
 * unbounded.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type SQLite from 'better-sqlite3';

/** Options of {@link Checkpointer.start}. */
export interface CheckpointerOptions {
  /** Time between two checkpoints. Default 200 ms. */
  everyMs?: number;
  /**
   * Frames the log holds past the last checkpoint before the next one runs.
   * Default SQLite's own threshold, 1000: the log is reused from its start
   * only after a checkpoint, as before, so a state directory that fills up is
   * refused at the next write rather than after the log's room is spent.
   */
  pages?: number;
  /** Told when the thread fails and the connection checkpoints by itself again. */
  onFailure?: (err: Error) => void;
  /** Told when a checkpoint fails (a full disk), once until one works again. */
  onCheckpointFailure?: (message: string) => void;
  /** Called when a checkpoint works again after {@link onCheckpointFailure} (the episode is over). */
  onCheckpointRecovered?: () => void;
}

/** SQLite's own threshold (pages), restored when the thread is gone. */
const SQLITE_DEFAULT_AUTOCHECKPOINT = 1000;

/**
 * The log's size kept after a checkpoint resets it (bytes): without a limit
 * the file keeps its largest size ever, with one it shrinks back to this.
 */
const LOG_SIZE_LIMIT = 64 * 1024 * 1024;

// The thread's code, CommonJS (an `eval` worker): it loads better-sqlite3 by
// the path the main thread resolved, whatever the working directory.
const THREAD = `(() => {
const fs = require('node:fs');
const os = require('node:os');
const { parentPort, workerData } = require('node:worker_threads');
const SQLite = require(workerData.module);
let db;
try {
  db = new SQLite(workerData.file, { fileMustExist: true });
} catch (err) {
  parentPort.postMessage({ error: err.message });
  return;
}
db.pragma('busy_timeout = 1000');
const checkpoint = db.prepare('pragma wal_checkpoint(PASSIVE)');
// Frames in the log not yet copied back, from the wal-index header in the -shm
// file (SQLite's documented format: mxFrame at byte 16, nBackfill at 96, in the
// machine's byte order); when it cannot be read, assume a checkpoint is due.
const u32 = os.endianness() === 'LE' ? (b, at) => b.readUInt32LE(at) : (b, at) => b.readUInt32BE(at);
const header = Buffer.alloc(100);
let shm;
function pending() {
  try {
    shm ??= fs.openSync(workerData.file + '-shm', 'r');
    if (fs.readSync(shm, header, 0, 100, 0) < 100) return Infinity;
    return u32(header, 16) - u32(header, 96);
  } catch {
    return Infinity;
  }
}
// A failed checkpoint (a full disk) is said once per episode; the next tick tries again.
let failing = false;
function run() {
  try {
    checkpoint.run();
    if (failing) parentPort.postMessage({ recovered: true });
    failing = false;
  } catch (err) {
    if (!failing) parentPort.postMessage({ failed: err.message });
    failing = true;
  }
}
const timer = setInterval(() => { if (pending() >= workerData.pages) run(); }, workerData.everyMs);
parentPort.on('message', () => {
  clearInterval(timer);
  try { run(); } finally { if (shm !== undefined) fs.closeSync(shm); db.close(); parentPort.close(); }
});
parentPort.postMessage({ ready: true });
})();
`;

/** The checkpointing thread of one database file. */
export class Checkpointer {
  readonly #worker: Worker;
  #closing = false;

  private constructor(worker: Worker) {
    this.#worker = worker;
  }

  /**
   * Starts the thread for the database `file` that `sqlite` serves; once it
   * runs, `sqlite` stops checkpointing by itself. Resolves when it runs, or
   * with undefined when it cannot (then nothing changed).
   */
  static async start(file: string, sqlite: SQLite.Database, options: CheckpointerOptions = {}): Promise<Checkpointer | undefined> {
    const module = createRequire(import.meta.url).resolve('better-sqlite3');
    const worker = new Worker(THREAD, { eval: true, workerData: { file, module, everyMs: options.everyMs ?? 200, pages: options.pages ?? SQLITE_DEFAULT_AUTOCHECKPOINT } });
    const started = await new Promise<boolean>((resolve) => {
      worker.once('message', (m: { ready?: true; error?: string }) => {
        if (m.error !== undefined) options.onFailure?.(new Error(`cannot open ${file} for checkpoints: ${m.error}`));
        resolve(m.ready === true);
      });
      worker.once('error', (err) => {
        options.onFailure?.(err);
        resolve(false);
      });
      worker.once('exit', () => resolve(false));
    });
    if (!started) {
      await worker.terminate();
      return undefined;
    }
    // Once it runs, a database left open (a test, a one-shot command) must not keep the process alive.
    worker.unref();
    const checkpointer = new Checkpointer(worker);
    sqlite.pragma(`journal_size_limit = ${LOG_SIZE_LIMIT}`);
    sqlite.pragma('wal_autocheckpoint = 0');
    worker.once('exit', () => {
      if (checkpointer.#closing || !sqlite.open) return;
      sqlite.pragma(`wal_autocheckpoint = ${SQLITE_DEFAULT_AUTOCHECKPOINT}`);
      options.onFailure?.(new Error('the checkpoint thread stopped'));
    });
    worker.on('error', (err) => options.onFailure?.(err));
    worker.on('message', (m: { failed?: string; recovered?: boolean }) => {
      if (m.failed !== undefined) options.onCheckpointFailure?.(m.failed);
      if (m.recovered) options.onCheckpointRecovered?.();
    });
    return checkpointer;
  }

  /** Runs a last checkpoint and stops the thread (before the serving connection closes). */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    this.#worker.ref();
    const exited = new Promise<void>((resolve) => this.#worker.once('exit', () => resolve()));
    this.#worker.postMessage('close');
    await exited;
  }
}
