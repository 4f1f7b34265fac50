/**
 * Kysely's PostgreSQL dialect as Basalt runs it: a write refused because the
 * database's disk is full is reported as what it is, as on SQLite, and so is a
 * database that cannot be reached.
 */
import { PostgresDialect, PostgresDriver, type CompiledQuery, type DatabaseConnection, type Dialect, type Driver, type QueryResult } from 'kysely';
import type pg from 'pg';
import { BasaltError } from '../errors/index.ts';
import { asWriteRefusal, type WriteRefusals } from './write-refusals.ts';

/** Node's errors of a socket to the database that did not connect, or was cut. */
const SOCKET_CODES: ReadonlySet<string> = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

/** SQLSTATEs of a session the server ended or would not begin: admin_shutdown, crash_shutdown, cannot_connect_now. */
const SESSION_ENDED: ReadonlySet<string> = new Set(['57P01', '57P02', '57P03']);

/**
 * The `DATABASE_UNAVAILABLE` error (503, retryable) for an error that says the
 * database could not be reached or ended the session: a restart, a failover,
 * a network cut (SQLSTATE class 08 too, and pg's own words for a connection
 * it lost or a query that got no answer in time); undefined for anything else.
 */
export function asUnavailable(err: unknown): BasaltError | undefined {
  if (err instanceof BasaltError) return undefined;
  const { code, message } = (err ?? {}) as { code?: unknown; message?: unknown };
  const lost = typeof code === 'string' && (SOCKET_CODES.has(code) || SESSION_ENDED.has(code) || code.startsWith('08'))
    || (typeof message === 'string' && /^Connection terminated|not queryable|timeout exceeded when trying to connect|^Query read timeout/.test(message));
  if (!lost) return undefined;
  return new BasaltError('DATABASE_UNAVAILABLE', 'Basalt\'s PostgreSQL database cannot be reached: try again in a moment.', { cause: err, retryable: true });
}

/** What {@link basaltPostgresDialect} runs over. */
export interface BasaltPostgresDialectOptions {
  pool: pg.Pool;
  /** Episodes of refused writes (logged once each). */
  refusals: WriteRefusals;
}

/**
 * The dialect. Its driver turns SQLSTATE 53100 (disk_full) from any statement
 * into `StateDirectoryUnwritableError` (code `DATABASE_DISK_FULL`), keeping
 * PostgreSQL's error as `cause`, and records the refusal ({@link WriteRefusals});
 * PostgreSQL has already undone the statement, so nothing of it remains. A
 * transaction that commits ends an episode. (With only a tablespace full, a
 * write that fits in a page already allocated still works: an episode may end
 * and start again while the disk stays full, each logged once.) A database
 * out of reach, at any step (a connection, a statement, a commit, a
 * rollback), is {@link asUnavailable}'s error.
 */
export function basaltPostgresDialect(o: BasaltPostgresDialectOptions): Dialect {
  const { pool, refusals } = o;

  /** Rethrows `err`, as a refused write or a database out of reach when it is one. */
  function rethrow(err: unknown): never {
    const refusal = asWriteRefusal(err);
    if (!refusal) throw asUnavailable(err) ?? err;
    refusals.refused(refusal);
    throw refusal;
  }

  /** Kysely's own connection type (not exported). */
  type KyselyConnection = Parameters<PostgresDriver['releaseConnection']>[0];

  class BasaltPostgresDriver extends PostgresDriver {
    /** Each of Kysely's connections by the one handed out in its place (release and discard need Kysely's own). */
    readonly #inner = new WeakMap<DatabaseConnection, KyselyConnection>();
    readonly #wrapped = new WeakMap<KyselyConnection, DatabaseConnection>();

    override async acquireConnection(): Promise<DatabaseConnection> {
      const inner = await super.acquireConnection().catch(rethrow) as KyselyConnection;
      let outer = this.#wrapped.get(inner);
      if (!outer) {
        outer = {
          executeQuery: async <R>(query: CompiledQuery): Promise<QueryResult<R>> => {
            try {
              return await inner.executeQuery<R>(query);
            } catch (err) {
              return rethrow(err);
            }
          },
          streamQuery: <R>(query: CompiledQuery, chunkSize: number): AsyncIterableIterator<QueryResult<R>> => inner.streamQuery<R>(query, chunkSize),
        };
        this.#wrapped.set(inner, outer);
        this.#inner.set(outer, inner);
      }
      return outer;
    }

    override async commitTransaction(connection: DatabaseConnection): Promise<void> {
      await super.commitTransaction(connection);
      refusals.wrote();
    }

    override async rollbackTransaction(connection: KyselyConnection): Promise<void> {
      await super.rollbackTransaction(this.#inner.get(connection) ?? connection).catch(rethrow);
    }

    override async releaseConnection(connection: KyselyConnection): Promise<void> {
      await super.releaseConnection(this.#inner.get(connection) ?? connection);
    }
  }

  class BasaltPostgresDialect extends PostgresDialect {
    override createDriver(): Driver {
      return new BasaltPostgresDriver({ pool });
    }
  }
  return new BasaltPostgresDialect({ pool });
}
