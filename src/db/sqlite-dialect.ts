/**
 * Kysely's SQLite dialect as Basalt runs it: group commit after every use of
 * the connection that wrote, refused writes reported as what they are, a
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

/**
 * The dialect. Its driver:
 * - begins every transaction with BEGIN IMMEDIATE: it holds the write lock
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
 * - skips the ROLLBACK of a transaction SQLite already rolled back by itself
 *   (as it may on SQLITE_FULL or SQLITE_IOERR): Kysely would otherwise throw
 *   "cannot rollback - no transaction is active" in place of the real error;
 * - notes each use of the connection that wrote as a commit of the
 *   {@link GroupCommit} (for `Db.durable` to flush), and as a write that
 *   worked, which ends an episode of refused writes.
 */
export function basaltSqliteDialect(o: BasaltSqliteDialectOptions): Dialect {
  const { database, sqlite, commits, refusals } = o;
  const base = new SqliteDialect({ database });
  const totalChanges = sqlite.prepare('select total_changes()').pluck();
  let seen = totalChanges.get() as number;
  /** Whether the current use of the connection had a write refused. */
  let refusedNow = false;

  /** Rethrows `err`, as a refused write when it is one. */
  function rethrow(err: unknown): never {
    const refusal = asWriteRefusal(err);
    if (!refusal) throw err;
    refusedNow = true;
    refusals.refused(refusal);
    throw refusal;
  }

  class BasaltSqliteDriver extends SqliteDriver {
    #connection: DatabaseConnection | undefined;

    override async acquireConnection(): Promise<DatabaseConnection> {
      const inner = await super.acquireConnection();
      refusedNow = false;
      this.#connection ??= {
        // better-sqlite3 throws synchronously, inside Kysely's (non-async) executeQuery.
        executeQuery: async <R>(query: CompiledQuery): Promise<QueryResult<R>> => {
          let deadline = 0;
          for (let attempt = 0; ; attempt++) {
            try {
              return await inner.executeQuery<R>(query);
            } catch (err) {
              // Inside a transaction the write lock is held already: a refusal there is the caller's error.
              if (!isBusy(err) || sqlite.inTransaction) return rethrow(err);
              deadline ||= Date.now() + BUSY_WAIT_MS;
              if (Date.now() > deadline) return rethrow(err);
              await waitForLock(attempt);
            }
          }
        },
        streamQuery: <R>(query: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> => inner.streamQuery<R>(query, chunkSize),
      };
      return this.#connection;
    }

    override async beginTransaction(connection: DatabaseConnection): Promise<void> {
      await connection.executeQuery(BEGIN_IMMEDIATE);
    }

    override async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
      // SQLite rolled back by itself: nothing to undo, and the caller's error stands.
      if (!sqlite.inTransaction) return;
      try {
        await super.rollbackTransaction(connection);
      } catch (err) {
        // A ROLLBACK that failed yet ended the transaction: the error that caused it matters more.
        if (sqlite.inTransaction) throw err;
      }
    }

    override async releaseConnection(): Promise<void> {
      // SQLite's count of changed rows moved: this use of the connection wrote (and, outside a transaction, committed).
      const changes = totalChanges.get() as number;
      if (changes !== seen) {
        commits?.noteCommit();
        if (!refusedNow) refusals.wrote();
      }
      seen = changes;
      await super.releaseConnection();
    }
  }

  return {
    createAdapter: () => base.createAdapter(),
    createDriver: () => new BasaltSqliteDriver({ database }),
    createQueryCompiler: () => base.createQueryCompiler(),
    createIntrospector: (db) => base.createIntrospector(db),
  };
}
