/**
 * Kysely's SQLite dialect as Basalt runs it: transactions committed in
 * batches, group commit after every COMMIT and every write on its own,
 * refused writes reported as what they are, a
 * rollback that never hides the error that caused it, and transactions that
 * share the database file with other connections (processes or threads).
 */
import type SQLite from 'better-sqlite3';
import { CompiledQuery, SqliteDialect, SqliteDriver, type DatabaseConnection, type Dialect, type QueryResult, type SqliteDialectConfig } from 'kysely';
import type { GroupCommit } from './group-commit.ts';
import { asWriteRefusal, type WriteRefusals } from './write-refusals.ts';

/** What {@link basaltSqliteDialect} runs over. */
export interface BasaltSqliteDialectOptions {
  /** The database as Kysely's driver sees it (with Basalt's statement cache). */
  database: SqliteDialectConfig['database'];
  /** The open database itself: its transaction state and its count of changed rows. */
  sqlite: SQLite.Database;
  /** Notes each use of the connection that wrote, for `Db.durable` to flush; none for `:memory:`. */
  commits?: GroupCommit;
  /** Episodes of refused writes (logged once each). */
  refusals: WriteRefusals;
}

/**
 * How long a statement waits for another connection's write lock (another
 * process, or a thread of this one) before its SQLITE_BUSY is thrown.
 */
export const BUSY_WAIT_MS = 10_000;

const BEGIN_IMMEDIATE = CompiledQuery.raw('begin immediate');

/** The pause before try `attempt + 1` at a locked database: the next turn of the event loop at first, then 1 ms (write transactions here last well under that). */
function waitForLock(attempt: number): Promise<void> {
  return new Promise((resolve) => (attempt < 2 ? setImmediate(resolve) : setTimeout(resolve, 1)));
}

/** Whether `err` is SQLite's "database is locked" (SQLITE_BUSY and its extended codes). */
function isBusy(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && code.startsWith('SQLITE_BUSY');
}

/** A FIFO lock: the one connection, lent to one user at a time in the order they asked. */
class ConnectionLock {
  #held = false;
  readonly #waiting: (() => void)[] = [];

  lock(): Promise<void> {
    if (!this.#held) {
      this.#held = true;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  unlock(): void {
    const next = this.#waiting.shift();
    if (next) next(); // handed over still held
    else this.#held = false;
  }
}

/**
 * Transactions that share one outer transaction: the first BEGINs it, each
 * runs under a savepoint of its own, and one COMMIT at the next turn of the
 * event loop ends them all. `done` settles when that COMMIT did (or failed).
 */
class Batch {
  readonly done: Promise<void>;
  resolve!: () => void;
  reject!: (err: unknown) => void;

  constructor() {
    this.done = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.done.catch(() => undefined); // a batch none of whose members committed is rejected unseen
  }
}

/** One loan of the connection (Kysely passes it back to begin, commit, roll back and release). */
interface Lease extends DatabaseConnection {
  /** `open`: between BEGIN and COMMIT; `handedOff`: released its savepoint into a batch and gave the connection back. */
  tx: 'none' | 'open' | 'handedOff';
  /** Whether a write of this loan was refused (the episode of refusals goes on). */
  refused: boolean;
  /** Whether the connection was given back already (by a commit that waits for its batch). */
  returned: boolean;
}

const SAVEPOINT = CompiledQuery.raw('savepoint basalt_tx');
const RELEASE = CompiledQuery.raw('release basalt_tx');
const ROLLBACK_TO = CompiledQuery.raw('rollback to basalt_tx');
const COMMIT = CompiledQuery.raw('commit');
const ROLLBACK = CompiledQuery.raw('rollback');

/**
 * The dialect. Its driver:
 * - commits transactions in batches: a transaction that begins while another
 *   one's COMMIT is pending joins it. The first of a batch begins the outer
 *   transaction; each runs under a savepoint (so one that fails rolls back
 *   alone) and gives the connection back when its body is done; one COMMIT at
 *   the next turn of the event loop ends the batch, and each transaction's
 *   `execute` resolves only then (or fails with the COMMIT's error: all of
 *   the batch failed together). A COMMIT writes every page the batch changed
 *   once, so transactions that touch the same pages (a table's last page, a
 *   project's quota row) share that work: it was half of a create's SQL time
 *   (bench/api profile). A query outside a transaction first commits the
 *   batch pending, so it never reads, nor adds to, changes not yet committed;
 * - begins every batch with BEGIN IMMEDIATE: it holds the write lock
 *   from its first statement, so a transaction that read and then writes
 *   never finds that another connection wrote in between (a deferred one
 *   would fail at its first write with SQLITE_BUSY, answered as a 500 when two
 *   processes shared one database file);
 * - waits for the write lock without blocking the thread: the connection runs
 *   with `busy_timeout = 0` (see `openDatabase`), and a statement refused with
 *   SQLITE_BUSY outside a transaction (a BEGIN, or a write on its own) runs
 *   again after a turn of the event loop, then every millisecond, for up to
 *   {@link BUSY_WAIT_MS}.
 *   SQLite's own busy handler would sleep on the thread that serves requests,
 *   1 ms at the least;
 * - turns SQLITE_FULL, ENOSPC and SQLITE_IOERR from a statement (a COMMIT
 *   included) into `StateDirectoryUnwritableError`, keeping the original
 *   as `cause`, and records the refusal ({@link WriteRefusals});
 * - skips the rollback of a transaction SQLite already rolled back by itself
 *   (as it may on SQLITE_FULL or SQLITE_IOERR): Kysely would otherwise throw
 *   "cannot rollback - no transaction is active" in place of the real error.
 *   The other members of its batch lost their changes with it, and fail with
 *   that error;
 * - notes each COMMIT and each write on its own as a commit of the
 *   {@link GroupCommit} (for `Db.durable` to flush), and as a write that
 *   worked, which ends an episode of refused writes.
 */
export function basaltSqliteDialect(o: BasaltSqliteDialectOptions): Dialect {
  const { database, sqlite, commits, refusals } = o;
  const base = new SqliteDialect({ database });
  const totalChanges = sqlite.prepare('select total_changes()').pluck();
  let seen = totalChanges.get() as number;

  /** Rethrows `err`, as a refused write when it is one. */
  function rethrow(err: unknown, lease?: Lease): never {
    const refusal = asWriteRefusal(err);
    if (!refusal) throw err;
    if (lease) lease.refused = true;
    refusals.refused(refusal);
    throw refusal;
  }

  /** Notes the writes committed since the last look, if any (called only while no batch is pending). */
  function noteCommitted(refused: boolean): void {
    // SQLite's count of changed rows moved: something wrote, and it is committed now.
    const changes = totalChanges.get() as number;
    if (changes !== seen) {
      commits?.noteCommit();
      if (!refused) refusals.wrote();
    }
    seen = changes;
  }

  class BasaltSqliteDriver extends SqliteDriver {
    #inner: DatabaseConnection | undefined;
    readonly #lock = new ConnectionLock();
    /** The batch whose COMMIT is pending, if any. */
    #batch: Batch | undefined;
    #destroyed = false;

    override async init(): Promise<void> {
      await super.init();
      // Kysely's own connection runs the statements; this driver lends it out itself.
      this.#inner = await super.acquireConnection();
      await super.releaseConnection();
    }

    override async acquireConnection(): Promise<DatabaseConnection> {
      await this.#lock.lock();
      const lease: Lease = {
        tx: 'none',
        refused: false,
        returned: false,
        executeQuery: async <R>(query: CompiledQuery): Promise<QueryResult<R>> => {
          // Not part of the batch: it reads and writes only what is committed.
          if (lease.tx === 'none' && this.#batch) await this.#commitBatch();
          return this.#run<R>(query, lease);
        },
        streamQuery: <R>(query: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> => this.#inner!.streamQuery<R>(query, chunkSize),
      };
      return lease;
    }

    /** Runs one statement for `lease`, waiting for another connection's write lock when outside a transaction. */
    async #run<R>(query: CompiledQuery, lease: Lease): Promise<QueryResult<R>> {
      let deadline = 0;
      for (let attempt = 0; ; attempt++) {
        try {
          return await this.#inner!.executeQuery<R>(query);
        } catch (err) {
          this.#checkBatch(err);
          // Inside a transaction the write lock is held already: a refusal there is the caller's error.
          if (!isBusy(err) || sqlite.inTransaction) return rethrow(err, lease);
          deadline ||= Date.now() + BUSY_WAIT_MS;
          if (Date.now() > deadline) return rethrow(err, lease);
          await waitForLock(attempt);
        } finally {
          if (lease.tx === 'open') this.#checkBatch();
        }
      }
    }

    /** Fails the pending batch if SQLite ended its transaction by itself (a refused write, or a ROLLBACK run as a statement). */
    #checkBatch(err?: unknown): void {
      const batch = this.#batch;
      if (!batch || sqlite.inTransaction) return;
      this.#batch = undefined;
      // Every member fails with the error that ended it: their changes went with it.
      batch.reject(asWriteRefusal(err) ?? err ?? new Error('the transaction was rolled back before its COMMIT'));
    }

    override async beginTransaction(connection: DatabaseConnection): Promise<void> {
      const lease = connection as Lease;
      lease.tx = 'open';
      if (!this.#batch) {
        await this.#run(BEGIN_IMMEDIATE, lease);
        const batch = new Batch();
        this.#batch = batch;
        setImmediate(() => void this.#commitLater(batch));
      }
      await this.#run(SAVEPOINT, lease);
    }

    override async commitTransaction(connection: DatabaseConnection): Promise<void> {
      const lease = connection as Lease;
      await this.#run(RELEASE, lease);
      const batch = this.#batch!;
      lease.tx = 'handedOff';
      lease.returned = true;
      this.#lock.unlock();
      await batch.done;
    }

    override async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
      const lease = connection as Lease;
      // Committed into a batch whose COMMIT failed: the batch rolled back already, and its error stands.
      if (lease.tx === 'handedOff') return;
      lease.tx = 'none';
      // SQLite rolled back by itself: nothing to undo, and the caller's error stands.
      if (!sqlite.inTransaction) return this.#checkBatch();
      try {
        await this.#inner!.executeQuery(ROLLBACK_TO);
        await this.#inner!.executeQuery(RELEASE);
      } catch (err) {
        this.#checkBatch(err);
        // A rollback that failed yet ended the transaction: the error that caused it matters more.
        if (sqlite.inTransaction) throw err;
      }
    }

    override async releaseConnection(connection?: DatabaseConnection): Promise<void> {
      const lease = connection as Lease | undefined;
      if (lease?.returned) return;
      // A write on its own committed by itself; a batch's writes are noted at its COMMIT.
      if (!this.#batch) noteCommitted(lease?.refused ?? false);
      this.#lock.unlock();
    }

    /** Commits `batch` once the connection is free, unless something committed or lost it first. */
    async #commitLater(batch: Batch): Promise<void> {
      await this.#lock.lock();
      try {
        if (this.#batch === batch && !this.#destroyed) await this.#commitBatch();
      } finally {
        this.#lock.unlock();
      }
    }

    /** Commits the pending batch (the caller holds the connection) and settles its members. */
    async #commitBatch(): Promise<void> {
      const batch = this.#batch!;
      this.#batch = undefined;
      try {
        await this.#inner!.executeQuery(COMMIT);
      } catch (err) {
        // SQLite may keep the transaction after a failed COMMIT: end it, so that the connection is usable again.
        if (sqlite.inTransaction) await this.#inner!.executeQuery(ROLLBACK).catch(() => undefined);
        const refusal = asWriteRefusal(err);
        if (refusal) refusals.refused(refusal);
        batch.reject(refusal ?? err);
        noteCommitted(true);
        return;
      }
      noteCommitted(false);
      batch.resolve();
    }

    override async destroy(): Promise<void> {
      await this.#lock.lock();
      try {
        if (this.#batch) await this.#commitBatch();
      } finally {
        this.#destroyed = true;
        this.#lock.unlock();
      }
      await super.destroy();
    }
  }

  return {
    createAdapter: () => base.createAdapter(),
    createDriver: () => new BasaltSqliteDriver({ database }),
    createQueryCompiler: () => base.createQueryCompiler(),
    createIntrospector: (db) => base.createIntrospector(db),
  };
}
