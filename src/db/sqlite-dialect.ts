/**
 * Kysely's SQLite dialect as Basalt runs it: group commit after every use of
 * the connection that wrote, refused writes reported as what they are, and a
 * rollback that never hides the error that caused it.
 */
import type SQLite from 'better-sqlite3';
import { SqliteDialect, SqliteDriver, type CompiledQuery, type DatabaseConnection, type Dialect, type QueryResult, type SqliteDialectConfig } from 'kysely';
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
 * The dialect. Its driver:
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
          try {
            return await inner.executeQuery<R>(query);
          } catch (err) {
            return rethrow(err);
          }
        },
        streamQuery: <R>(query: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> => inner.streamQuery<R>(query, chunkSize),
      };
      return this.#connection;
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
