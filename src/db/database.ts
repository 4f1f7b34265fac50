/**
 * Opens the database named by `[database] connection` and applies migrations.
 * One Kysely instance per process; every query in Basalt goes through it.
 */
import fs from 'node:fs';
import path from 'node:path';
import SQLite from 'better-sqlite3';
import { Kysely, Migrator, sql, type Migration, type MigrationResultSet } from 'kysely';
import pg from 'pg';
import { ConfigError } from '../errors/index.ts';
import { Checkpointer } from './checkpointer.ts';
import { GroupCommit } from './group-commit.ts';
import { listenWithReconnect, type ListenerLog } from './notification-listener.ts';
import { basaltPostgresDialect } from './postgres-dialect.ts';
import { basaltSqliteDialect } from './sqlite-dialect.ts';
import { WriteRefusals, type WriteRefusalLog } from './write-refusals.ts';
import type { Database } from './schema.ts';
import * as m0001 from './migrations/0001-initial.ts';
import * as m0002 from './migrations/0002-quotas.ts';
import * as m0003 from './migrations/0003-volume-types.ts';
import * as m0004 from './migrations/0004-message-args.ts';
import * as m0005 from './migrations/0005-snapshots.ts';
import * as m0006 from './migrations/0006-attachments.ts';
import * as m0007 from './migrations/0007-attachment-psk.ts';
import * as m0008 from './migrations/0008-transfers.ts';
import * as m0009 from './migrations/0009-service-frozen.ts';
import * as m0010 from './migrations/0010-groups.ts';
import * as m0011 from './migrations/0011-encryption.ts';
import * as m0012 from './migrations/0012-readonly-progress.ts';
import * as m0013 from './migrations/0013-volume-migration.ts';
import * as m0014 from './migrations/0014-volume-host-index.ts';
import * as m0015 from './migrations/0015-backups.ts';
import * as m0016 from './migrations/0016-volume-exports.ts';
import * as m0017 from './migrations/0017-progress.ts';
import * as m0018 from './migrations/0018-event-deliveries.ts';
import * as m0018b from './migrations/0018-event-stream.ts';
import * as m0018c from './migrations/0018-webhooks.ts';
import * as m0019 from './migrations/0019-replication.ts';
import * as m0020 from './migrations/0020-event-detail.ts';
import * as m0021 from './migrations/0021-group-replication.ts';
import * as m0021b from './migrations/0021-replica-checkpoints.ts';
import * as m0025 from './migrations/0025-jobs-claim-order.ts';
import * as m0026 from './migrations/0026-pool-usage.ts';
import * as m0027 from './migrations/0027-catalogue-generation.ts';
import * as m0028 from './migrations/0028-event-place-at-commit.ts';
import * as m0029 from './migrations/0029-job-deferrals.ts';

/** Every migration, in order. Append only; never edit a released one. */
const MIGRATIONS: Record<string, Migration> = {
  '0001-initial': m0001,
  '0002-quotas': m0002,
  '0003-volume-types': m0003,
  '0004-message-args': m0004,
  '0005-snapshots': m0005,
  '0006-attachments': m0006,
  '0007-attachment-psk': m0007,
  '0008-transfers': m0008,
  '0009-service-frozen': m0009,
  '0010-groups': m0010,
  '0011-encryption': m0011,
  '0012-readonly-progress': m0012,
  '0013-volume-migration': m0013,
  '0014-volume-host-index': m0014,
  '0015-backups': m0015,
  '0016-volume-exports': m0016,
  '0017-progress': m0017,
  '0018-event-deliveries': m0018,
  '0018-event-stream': m0018b,
  '0018-webhooks': m0018c,
  '0019-replication': m0019,
  '0020-event-detail': m0020,
  '0021-group-replication': m0021,
  '0021-replica-checkpoints': m0021b,
  '0025-jobs-claim-order': m0025,
  '0026-pool-usage': m0026,
  '0027-catalogue-generation': m0027,
  '0028-event-place-at-commit': m0028,
  '0029-job-deferrals': m0029,
};

/** An open database. */
export interface Db {
  readonly kysely: Kysely<Database>;
  readonly dialect: 'sqlite' | 'postgres';
  /**
   * Publishes `payload` on `channel` to every process sharing the database
   * (PostgreSQL NOTIFY; given a transaction `tx`, delivered when it commits).
   * SQLite: nothing to do across processes (they poll).
   */
  notify(channel: string, payload: string, tx?: Kysely<Database>): Promise<void>;
  /**
   * Calls `fn` for each notification on `channel` (PostgreSQL LISTEN; the
   * session reconnects with back-off when lost, see `notification-listener.ts`).
   * Returns a stop function.
   */
  listen(channel: string, fn: (payload: string) => void): Promise<() => Promise<void>>;
  /**
   * Locks rows of `table` by id until the end of transaction `tx`
   * (PostgreSQL `SELECT … FOR NO KEY UPDATE`, in id order so that two lockers
   * cannot deadlock). Every check-and-change of a volume takes its row's lock
   * first: under READ COMMITTED that is what serialises them. The lock is the
   * one an UPDATE of the row takes, not a DELETE's: a row inserted meanwhile
   * that refers to the locked one (a clone's source, a snapshot's volume) does
   * not wait for it; a delete of the row takes the stronger lock itself.
   * SQLite: nothing to do, a transaction holds the only connection.
   */
  lockRows(tx: Kysely<Database>, table: 'volumes' | 'groups', ids: readonly string[]): Promise<void>;
  /**
   * Serialises the transactions that name one of `keys` until the end of
   * `tx`, without locking any row (PostgreSQL transaction-level advisory
   * locks, in key order). For a rule over many rows, such as a pool's
   * capacity under concurrent placements: locking the pool's service row for
   * it made that service's heartbeat wait behind placements, which wait in
   * turn on the volumes' rows, long enough under load to report the service
   * down. SQLite: nothing to do, as for {@link lockRows}.
   */
  lockKeys(tx: Kysely<Database>, keys: readonly string[]): Promise<void>;
  /**
   * Resolves once every transaction committed so far in this process is on
   * stable storage. Awaited before anything leaves the process that depends on
   * a commit: an API answer to a change, and a job's work (which may destroy
   * data the committed status no longer needs). SQLite: a shared flush of the
   * write-ahead log ({@link GroupCommit}); PostgreSQL: nothing to wait for, a
   * commit is durable when it returns.
   * @throws Error from the flush (EIO, ENOSPC): the commits are not known to be durable.
   */
  durable(): Promise<void>;
  /** The group commit of a SQLite database file; undefined elsewhere. */
  readonly durability?: GroupCommit;
  /**
   * Episodes of writes refused because the state directory is full or failing
   * (SQLite), or the PostgreSQL database's disk is full: every such failure
   * throws `StateDirectoryUnwritableError` and is logged once per episode.
   */
  readonly refusals?: WriteRefusals;
  close(): Promise<void>;
}

// BIGINT (lease and heartbeat instants, counts) as JavaScript numbers: every
// value Basalt stores fits in 2^53.
pg.types.setTypeParser(20, (v) => Number(v));

/** Options of {@link openDatabase}. */
export interface OpenDatabaseOptions {
  /**
   * Where a lost and a restored notification session (PostgreSQL), and the
   * start and end of an episode of refused writes, are logged.
   * Default: not logged.
   */
  log?: ListenerLog & WriteRefusalLog;
}

/**
 * Opens the database at `connection`: `sqlite://PATH` or `postgresql://…`.
 * SQLite runs in WAL mode with its log flushed in groups ({@link GroupCommit}):
 * what the API answered and what a job acts on must survive a power cut, and
 * {@link Db.durable} is how they wait for it. A write SQLite refuses because
 * the state directory is full (or failing) throws `StateDirectoryUnwritableError`
 * and leaves nothing behind; reads go on. On PostgreSQL, so does a write the
 * server refuses because its disk is full (SQLSTATE 53100).
 * @throws ConfigError for an unsupported URL.
 */
export function openDatabase(connection: string, options: OpenDatabaseOptions = {}): Db {
  if (/^postgres(ql)?:\/\//.test(connection)) {
    const pool = new pg.Pool({ connectionString: connection, max: 10 });
    // A pooled connection that the server drops (restart, failover) must not crash the process: idle,
    // the pool replaces it at the next query; checked out between two queries (a transaction's), pg
    // emits the error on the client itself, where the pool listens only while it is idle. Its next
    // query fails (the transaction with it, a job then tries again) and the pool drops it on release.
    pool.on('error', () => undefined);
    pool.on('connect', (client) => { client.on('error', () => undefined); });
    const refusals = new WriteRefusals(options.log);
    const kysely = new Kysely<Database>({ dialect: basaltPostgresDialect({ pool, refusals }) });
    return {
      kysely,
      dialect: 'postgres',
      refusals,
      notify: async (channel, payload, tx) => {
        await sql`select pg_notify(${channel}, ${payload})`.execute(tx ?? kysely);
      },
      // A dedicated connection (LISTEN holds its session), connected again whenever it is lost.
      listen: (channel, fn) => listenWithReconnect(connection, channel, fn, { log: options.log }),
      durable: async () => undefined,
      lockRows: async (tx, table, ids) => {
        if (ids.length === 0) return;
        await tx.selectFrom(table).select('id').where('id', 'in', [...ids].sort()).orderBy('id').forNoKeyUpdate().execute();
      },
      lockKeys: async (tx, keys) => {
        for (const key of [...new Set(keys)].sort()) await sql`select pg_advisory_xact_lock(hashtextextended(${key}, 0))`.execute(tx);
      },
      close: () => kysely.destroy(),
    };
  }
  const match = /^sqlite:\/\/(.+)$/.exec(connection);
  if (!match) {
    throw new ConfigError(`Unsupported [database] connection "${connection}": expected sqlite://PATH or postgresql://…`);
  }
  const file = match[1]!;
  if (file !== ':memory:') fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const sqlite = new SQLite(file);
  sqlite.pragma('busy_timeout = 10000'); // while opening; the dialect waits for locks itself (below)
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('foreign_keys = ON');
  // Savepoints (see sqlite-dialect.ts) journal in memory: by default a journal past 64 KiB spills to a temporary file.
  sqlite.pragma('temp_store = MEMORY');
  // Another process (or thread) writing: the dialect waits for its lock off the thread, see sqlite-dialect.ts.
  sqlite.pragma('busy_timeout = 0');
  const database = withStatementCache(sqlite);
  const refusals = new WriteRefusals(options.log);
  if (file === ':memory:') {
    const kysely = new Kysely<Database>({ dialect: basaltSqliteDialect({ database, sqlite, refusals }) });
    return { kysely, dialect: 'sqlite', notify: async () => undefined, listen: async () => async () => undefined, lockRows: async () => undefined, lockKeys: async () => undefined, durable: async () => undefined, refusals, close: () => kysely.destroy() };
  }
  // Durable at the answer, flushed in groups: see group-commit.ts.
  sqlite.pragma('synchronous = NORMAL');
  const commits = new GroupCommit(`${path.resolve(file)}-wal`);
  // Checkpoints off the serving thread: see checkpointer.ts.
  const checkpointer = Checkpointer.start(path.resolve(file), sqlite, {
    onFailure: (err) => options.log?.warn({ err: err.message }, 'SQLite checkpoints are back on the serving thread'),
    onCheckpointFailure: (message) => options.log?.warn({ err: message }, 'SQLite checkpoint failed; the log keeps the commits and the next checkpoint tries again'),
    onCheckpointRecovered: () => options.log?.info({}, 'SQLite checkpoints work again: the log is copied into the database and reused'),
  });
  const kysely = new Kysely<Database>({ dialect: basaltSqliteDialect({ database, sqlite, commits, refusals }) });
  return {
    kysely,
    dialect: 'sqlite',
    notify: async () => undefined,
    listen: async () => async () => undefined,
    lockRows: async () => undefined,
    lockKeys: async () => undefined,
    durable: () => commits.durable(commits.committed),
    durability: commits,
    refusals,
    close: async () => {
      await commits.close();
      await (await checkpointer)?.close();
      await kysely.destroy();
    },
  };
}

/** Most prepared statements kept per database (Basalt's queries are a few hundred shapes). */
const STATEMENT_CACHE_SIZE = 1000;

/**
 * The database as Kysely's SQLite driver sees it, with its prepared statements
 * kept by SQL text: Kysely prepares every query it runs, and preparing cost
 * about a third as much as running them (bench/api profile). A statement is
 * reused only once its previous run has returned (better-sqlite3 is
 * synchronous and Basalt does not stream SQLite queries), and SQLite
 * re-prepares a cached statement by itself after a schema change.
 */
function withStatementCache(sqlite: SQLite.Database): { prepare(sql: string): SQLite.Statement; close(): void } {
  const cache = new Map<string, SQLite.Statement>();
  return {
    prepare(sql) {
      let stmt = cache.get(sql);
      if (stmt) {
        // Most recently used last, so the oldest leaves first.
        cache.delete(sql);
      } else {
        stmt = sqlite.prepare(sql);
        if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value!);
      }
      cache.set(sql, stmt);
      return stmt;
    },
    close() {
      cache.clear();
      sqlite.close();
    },
  };
}

function migrator(db: Db): Migrator {
  return new Migrator({
    db: db.kysely,
    provider: { getMigrations: async () => MIGRATIONS },
  });
}

/**
 * Applies every pending migration. Safe to call at every start and from
 * several processes: Kysely's migration lock serialises them.
 * @throws Error from the failing migration (with the result set as cause).
 */
export async function migrateToLatest(db: Db): Promise<string[]> {
  const result: MigrationResultSet = await migrator(db).migrateToLatest();
  if (result.error) throw new Error('Database migration failed', { cause: result.error });
  return (result.results ?? []).map((r) => r.migrationName);
}

/**
 * Applies the migrations up to and including `name` (tests of a migration over
 * data written before it).
 * @throws Error from the failing migration (with the result set as cause).
 */
export async function migrateTo(db: Db, name: keyof typeof MIGRATIONS): Promise<void> {
  const result = await migrator(db).migrateTo(name);
  if (result.error) throw new Error('Database migration failed', { cause: result.error });
}

/** Lists every known migration and whether it is applied (for `basalt db status`). */
export async function migrationStatus(db: Db): Promise<{ name: string; applied: boolean }[]> {
  const all = await migrator(db).getMigrations();
  return all.map((m) => ({ name: m.name, applied: m.executedAt !== undefined }));
}
