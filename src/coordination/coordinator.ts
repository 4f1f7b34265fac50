/**
 * Named locks shared by every process of a deployment, chosen by
 * `[coordination] backend_url`:
 * - `file://DIR` (default `<state_dir>/locks`): flock(2)ed lock files, for processes on one host;
 * - `postgresql://…`: PostgreSQL session advisory locks, for a cluster on one database;
 * - `etcd3+http://HOST:PORT[,HOST:PORT…][?ttl=SECONDS]`: etcd locks on leases (the etcd3 client).
 *
 * Code takes locks the same way whatever the backend. A lock held by a process
 * that dies is released (the kernel drops its file locks; its PostgreSQL session
 * ends; its etcd lease expires).
 *
 * Lock inventory (names are templates over ids):
 * - `volume-<id>`: held around every driver call that changes or reads a
 *   volume's data (create, extend, delete, snapshot, clone source, revert), so
 *   that a job taken over after an expired lease never runs the driver beside
 *   its first, merely slow, worker. A backup holds it while it reads the
 *   volume (or takes its temporary snapshot), a restore while it writes it.
 * - `backup-volume-<volume id>`: held by every writer of one volume's backups
 *   in the backup repository (create, delete): a deletion's collection of
 *   chunks no manifest names must not run beside a create that found a chunk
 *   stored and counts on it.
 */
import fs from 'node:fs';
import os from 'node:os';
import { createRequire } from 'node:module';
import path from 'node:path';
import pg from 'pg';
import type * as Etcd3Module from 'etcd3';
import { addon } from '../common/addon.ts';
import { ConfigError, BasaltError } from '../errors/index.ts';
import { asUnavailable } from '../db/postgres-dialect.ts';

/** A held lock. */
export interface Lock {
  /** Releases the lock. Idempotent. */
  release(): Promise<void>;
  /**
   * Aborted once the lock may be another's: its PostgreSQL session ended, or
   * its etcd lease went unrenewed for two thirds of its ttl (before etcd lets
   * it expire) or was lost. A file lock is never lost while its process lives.
   * {@link withLock} hands it to its function (a long step stops on it) and
   * checks it once the function is done.
   */
  readonly lost: AbortSignal;
}

/** The `lost` of a lock that cannot be lost. */
const NEVER_LOST = new AbortController().signal;

/** The coordination backend. */
export interface Coordinator {
  /**
   * Takes the named lock, waiting up to `timeoutMs`.
   * @throws BasaltError BACKEND_UNAVAILABLE (retryable) when it stays held, or when a file lock cannot be made because its folder is full;
   *   COORDINATION_UNAVAILABLE (etcd) or DATABASE_UNAVAILABLE (PostgreSQL) when the backend cannot be reached.
   */
  lock(name: string, timeoutMs: number): Promise<Lock>;
  /**
   * Frees at once the locks that `owner`, a process incarnation known to be
   * dead (its successor on the same host is starting), still holds where the
   * backend would free them only later: etcd keys live out their lease's
   * `ttl`. Files and PostgreSQL sessions ended with the process: nothing to do.
   * Returns how many were freed.
   */
  releaseLocksOf(owner: string): Promise<number>;
  close(): Promise<void>;
}

/** Options of {@link openCoordinator}. */
export interface CoordinatorOptions {
  /** This process incarnation's id, recorded with each lock where the backend keeps a value (etcd) for {@link Coordinator.releaseLocksOf}. */
  owner?: string;
}

/**
 * Runs `fn` under the named lock, passing it the lock's {@link Lock.lost}: a
 * long step (a copy) checks it between chunks and stops once it is aborted.
 * @throws BasaltError COORDINATION_UNAVAILABLE (retryable) when the lock was
 *   lost while `fn` ran, whether `fn` returned or failed (it may have failed
 *   because it stopped): what `fn` did was not done under the lock alone, so
 *   its caller (a job, whose steps are idempotent) runs it again rather than
 *   take its result or its error.
 */
export async function withLock<T>(c: Coordinator, name: string, timeoutMs: number, fn: (lost: AbortSignal) => Promise<T>): Promise<T> {
  const lock = await c.lock(name, timeoutMs);
  let outcome: { value: T } | { error: unknown };
  try {
    outcome = { value: await fn(lock.lost) };
  } catch (error) {
    outcome = { error };
  } finally {
    await lock.release();
  }
  if (lock.lost.aborted) {
    const cause = 'error' in outcome ? outcome.error : lock.lost.reason;
    throw new BasaltError('COORDINATION_UNAVAILABLE', `Lock ${name} was lost while held (${(lock.lost.reason as Error).message}): the step it guarded will run again.`, { cause, retryable: true });
  }
  if ('error' in outcome) throw outcome.error;
  return outcome.value;
}

function timedOut(name: string, timeoutMs: number): BasaltError {
  return new BasaltError('BACKEND_UNAVAILABLE', `Lock ${name} stayed held for ${timeoutMs} ms`, { retryable: true });
}

/** Lock names become file names and advisory keys: keep them to a safe alphabet. */
function checkName(name: string): void {
  if (!/^[A-Za-z0-9_.-]{1,200}$/.test(name)) throw new ConfigError(`Invalid lock name ${name}`);
}

/**
 * Lock files in a folder, each held by flock(2) on an open file: the kernel
 * drops a lock when its holder closes the file or dies, so a killed holder's
 * locks are free at once (a staleness timeout would hold its volumes' jobs up
 * meanwhile, and break the lock of a holder merely stopped). A holder removes
 * its file before it lets go, so the folder holds only the locks held now
 * (and those of holders that died, until their name is locked again or a
 * coordinator opens the folder). A waiter that wins the lock on a file
 * already removed opens the name again.
 *
 * The files are opened, removed and closed with synchronous calls: each is
 * a few microseconds of metadata in the state directory, which SQLite's log
 * is written to synchronously anyway; through libuv's threads a lock and its
 * release cost about 120 µs of CPU against 17 (a hand-off each way per call).
 */
class FileCoordinator implements Coordinator {
  constructor(private readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true });
    this.#sweep();
  }

  /**
   * Removes the files of locks no one holds: those of holders that died (a
   * holder's file stays when it dies). Each is removed while locked, as a
   * release does, so a waiter on it opens the name again.
   */
  #sweep(): void {
    for (const entry of fs.readdirSync(this.dir)) {
      if (!entry.endsWith('.lock')) continue;
      let fd: number;
      try {
        fd = fs.openSync(path.join(this.dir, entry), 'r');
      } catch {
        continue; // gone meanwhile, or not ours to open
      }
      try {
        // Still linked once locked: still the file at the name (as in lock()), so the name removed is not
        // another's that a holder released and a third made again meanwhile.
        if (fs.fstatSync(fd).isFile() && addon.tryLockExclusive(fd) === 0 && fs.fstatSync(fd).nlink > 0) fs.rmSync(path.join(this.dir, entry), { force: true });
      } finally {
        fs.closeSync(fd);
      }
    }
  }

  async lock(name: string, timeoutMs: number): Promise<Lock> {
    checkName(name);
    const file = path.join(this.dir, `${name}.lock`);
    const deadline = Date.now() + timeoutMs;
    const wait = async (): Promise<void> => {
      if (Date.now() > deadline) throw timedOut(name, timeoutMs);
      await new Promise((r) => setTimeout(r, 20));
    };
    for (;;) {
      const fd = this.#open(name, file);
      if (fd === undefined) {
        await wait();
        continue;
      }
      let held = false;
      try {
        for (;;) {
          const errno = addon.tryLockExclusive(fd);
          if (errno === 0) break;
          if (errno !== os.constants.errno.EWOULDBLOCK) throw new BasaltError('BACKEND_UNAVAILABLE', `Lock ${name} cannot be taken: flock failed with errno ${errno}`, { retryable: true });
          await wait();
        }
        // Still linked: still the file at the name (a holder removes it as it releases the lock, and nothing
        // else links or renames these files). An fstat of an open file needs no disk.
        held = fs.fstatSync(fd).nlink > 0;
      } finally {
        if (!held) fs.closeSync(fd);
      }
      if (held) {
        let released = false;
        return {
          release: async () => {
            if (released) return;
            released = true;
            // Removed while still held: a waiter on this file then finds it gone and opens the name again.
            try {
              fs.unlinkSync(file);
            } catch { /* gone already */ }
            fs.closeSync(fd);
          },
          lost: NEVER_LOST,
        };
      }
    }
  }

  /**
   * Opens (makes) the lock file; a folder removed meanwhile is made again.
   * Undefined while the name is a lock directory of the previous release
   * (proper-lockfile's, refreshed every 2 s by a live holder): held, unless
   * unrefreshed for 10 s, when it is removed as that release did. That
   * release's processes find a lock file where they make their directory and
   * take it as held, so a host's processes exclude each other during a
   * rolling upgrade; the next release drops this.
   */
  #open(name: string, file: string): number | undefined {
    for (let again = true; ; again = false) {
      try {
        return fs.openSync(file, 'a', 0o600);
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === 'ENOENT' && again) {
          fs.mkdirSync(this.dir, { recursive: true });
          continue;
        }
        if (code === 'EISDIR') {
          const dir = fs.statSync(file, { throwIfNoEntry: false });
          if (dir && dir.mtimeMs < Date.now() - 10_000) {
            try {
              fs.rmdirSync(file);
            } catch { /* refreshed or gone meanwhile */ }
          }
          return undefined;
        }
        // A full folder (by default in the state directory, issue 13): a new lock file needs an inode and
        // maybe a directory block. Retried later, as a lock held too long is.
        if (code === 'ENOSPC' || code === 'EDQUOT') throw new BasaltError('BACKEND_UNAVAILABLE', `Lock ${name} cannot be taken: the lock folder is full`, { cause: err, retryable: true });
        throw err;
      }
    }
  }

  async releaseLocksOf(): Promise<number> {
    return 0; // the kernel dropped them with the process
  }

  async close(): Promise<void> { /* nothing held open */ }
}

/** How long a connect or a query of the PostgreSQL coordinator may take before the database counts as out of reach. */
const PG_CALL_DEADLINE_MS = 5000;

/** PostgreSQL session advisory locks, each on its own connection (the lock lives as long as the session). */
class PostgresCoordinator implements Coordinator {
  private readonly pool: pg.Pool;

  constructor(url: string) {
    // Bounded waits (the lock itself is polled, each query is short): behind a network that holds its
    // bytes a connect or a query would otherwise wait until TCP gives up, and with it the job asking.
    this.pool = new pg.Pool({ connectionString: url, max: 20, connectionTimeoutMillis: PG_CALL_DEADLINE_MS, query_timeout: PG_CALL_DEADLINE_MS });
    // A session the server ends (restart, failover) must not crash the process, idle or holding a
    // lock (see openDatabase): its lock ended with it, and its release finds the session broken.
    this.pool.on('error', () => undefined);
    this.pool.on('connect', (client) => { client.on('error', () => undefined); });
  }

  async lock(name: string, timeoutMs: number): Promise<Lock> {
    checkName(name);
    const client = await this.pool.connect().catch((err: unknown) => { throw asUnavailable(err) ?? err; });
    const deadline = Date.now() + timeoutMs;
    try {
      for (;;) {
        const r = await client.query<{ ok: boolean }>('select pg_try_advisory_lock(hashtext($1)) as ok', [name]);
        if (r.rows[0]!.ok) break;
        if (Date.now() > deadline) throw timedOut(name, timeoutMs);
        await new Promise((res) => setTimeout(res, 20));
      }
    } catch (err) {
      const unavailable = asUnavailable(err);
      // A broken session is not put back in the pool.
      client.release(unavailable ? (err as Error) : undefined);
      throw unavailable ?? err;
    }
    let released = false;
    // The session's end is the lock's: a restart, a failover, pg_terminate_backend, a cut network.
    const lost = new AbortController();
    const ended = (err?: Error): void => { lost.abort(new Error(`its PostgreSQL session ended${err ? `: ${err.message}` : ''}`)); };
    client.on('error', ended).on('end', ended);
    return {
      release: async () => {
        if (released) return;
        released = true;
        try {
          await client.query('select pg_advisory_unlock(hashtext($1))', [name]);
          client.off('error', ended).off('end', ended);
          client.release();
        } catch (err) {
          client.off('error', ended).off('end', ended);
          client.release(err as Error); // a broken session drops its locks anyway
        }
      },
      lost: lost.signal,
    };
  }

  async releaseLocksOf(): Promise<number> {
    return 0; // they ended with the process's sessions
  }

  close(): Promise<void> {
    return this.pool.end();
  }
}

const LOCK_PREFIX = 'basalt/locks/';

/** How long one etcd call may take before it counts as etcd out of reach (the client tries a call up to three times). */
const ETCD_CALL_DEADLINE_MS = 5000;

/**
 * etcd locks: each held lock is a key on a lease that dies with its holder
 * (TTL, default 10 s), its value the holder's incarnation id.
 */
class EtcdCoordinator implements Coordinator {
  private readonly etcd3: typeof Etcd3Module;
  private readonly client: Etcd3Module.Etcd3;

  constructor(hosts: string[], private readonly ttlSeconds: number, private readonly owner: string) {
    // Loaded here, not at import: the etcd3 client (gRPC) costs about 0.2 s of CPU to load,
    // paid by every process start otherwise, and only etcd deployments use it.
    this.etcd3 = createRequire(import.meta.url)('etcd3') as typeof Etcd3Module;
    // Each call has a deadline (not the lease's keep-alive stream): behind a network that holds its bytes,
    // a call would otherwise wait for ever, and with it the job taking or releasing a lock.
    this.client = new this.etcd3.Etcd3({ hosts, defaultCallOptions: (call) => (call.isStream ? {} : { deadline: Date.now() + ETCD_CALL_DEADLINE_MS }) });
  }

  /**
   * One lease for the whole wait, and after a failed put a write only when
   * the key looks free again: a waiter polls with reads, which etcd answers
   * without a write to its log.
   * (The etcd3 client's Lock grants a lease, tries its put and revokes the lease
   * at every attempt: three writes, each synced to disk, every 25 ms for every
   * waiter, which slowed the etcd every lock of a busy cluster goes through.)
   */
  async lock(name: string, timeoutMs: number): Promise<Lock> {
    checkName(name);
    const key = `${LOCK_PREFIX}${name}`;
    const deadline = Date.now() + timeoutMs;
    // The client keeps a granted lease alive until it is revoked.
    const lease = this.client.lease(this.ttlSeconds);
    try {
      const id = await lease.grant();
      for (;;) {
        const put = await this.client.if(key, 'Create', '==', 0).then(this.client.put(key).value(this.owner).lease(id)).commit();
        if (put.succeeded) {
          let released = false;
          const { signal, stop } = this.#watchLease(lease);
          return {
            release: async () => {
              if (released) return;
              released = true;
              stop();
              // A revoke etcd does not take (down, or the lease already expired) leaves the key to expire with its lease.
              await lease.revoke().catch(() => undefined);
            },
            lost: signal,
          };
        }
        do {
          if (Date.now() > deadline) throw timedOut(name, timeoutMs);
          await new Promise((r) => setTimeout(r, 25));
        } while (await this.client.get(key).exists());
      }
    } catch (err) {
      // Also when a put landed with its answer lost: revoking the lease removes the key it holds. Not awaited:
      // the keep-alive stops at the call, and a revoke etcd does not answer must not hold this up.
      void lease.revoke().catch(() => undefined);
      if (err instanceof BasaltError) throw err;
      // Network and server errors (the client's own retries and circuit breaker gave up): etcd is away.
      if (this.etcd3.isRecoverableError(err as Error) || (err as { isBrokenCircuitError?: unknown }).isBrokenCircuitError === true) {
        throw new BasaltError('COORDINATION_UNAVAILABLE', `The coordination service (etcd) cannot be reached: lock ${name} was not taken; try again in a moment.`, { cause: err, retryable: true });
      }
      throw new BasaltError('BACKEND_UNAVAILABLE', `etcd lock ${name} failed`, { cause: err, retryable: true });
    }
  }

  /**
   * A signal aborted when `lease` may have expired in etcd: renewals (every
   * third of the ttl) have not succeeded for two thirds of it, so the holder
   * learns of the loss before etcd gives the lock to another; or the client
   * says the lease is lost.
   */
  #watchLease(lease: Etcd3Module.Lease): { signal: AbortSignal; stop: () => void } {
    const lost = new AbortController();
    const ttlMs = this.ttlSeconds * 1000;
    let renewed = Date.now();
    const onRenewed = (): void => { renewed = Date.now(); };
    const onLost = (err: Error): void => { lost.abort(new Error(`its etcd lease was lost: ${err.message}`)); };
    lease.on('keepaliveSucceeded', onRenewed).on('lost', onLost);
    const check = setInterval(() => {
      if (Date.now() - renewed > (ttlMs * 2) / 3) lost.abort(new Error(`its etcd lease was not renewed for ${Date.now() - renewed} ms (ttl ${this.ttlSeconds} s)`));
    }, Math.max(50, ttlMs / 12));
    check.unref();
    const stop = (): void => {
      clearInterval(check);
      lease.off('keepaliveSucceeded', onRenewed).off('lost', onLost);
    };
    lost.signal.addEventListener('abort', () => clearInterval(check), { once: true });
    return { signal: lost.signal, stop };
  }

  async releaseLocksOf(owner: string): Promise<number> {
    if (!owner) return 0;
    const held = await this.client.getAll().prefix(LOCK_PREFIX).strings();
    let freed = 0;
    for (const key of Object.keys(held).filter((k) => held[k] === owner)) {
      // Only while it is still that incarnation's: a lock taken since by another is left alone.
      const r = await this.client.if(key, 'Value', '==', owner).then(this.client.delete().key(key)).commit();
      if (r.succeeded) freed++;
    }
    return freed;
  }

  async close(): Promise<void> {
    this.client.close();
  }
}

/**
 * Opens the backend named by `url`.
 * @throws ConfigError for an unsupported scheme.
 */
export function openCoordinator(url: string, options: CoordinatorOptions = {}): Coordinator {
  if (url.startsWith('file://')) return new FileCoordinator(url.slice('file://'.length));
  if (/^postgres(ql)?:\/\//.test(url)) return new PostgresCoordinator(url);
  const etcd = /^etcd3\+(https?):\/\/([^/?]+)\/?(?:\?ttl=(\d+))?$/.exec(url);
  if (etcd) return new EtcdCoordinator(etcd[2]!.split(',').map((h) => `${etcd[1]}://${h}`), Number(etcd[3] ?? 10), options.owner ?? '');
  throw new ConfigError(`Unsupported [coordination] backend_url "${url}": expected file://DIR, postgresql://… or etcd3+http://HOST:PORT`);
}
