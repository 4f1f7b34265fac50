/**
 * A real PostgreSQL from Debian for tests: a private cluster in a temporary
 * folder, listening on a free loopback port, run as the `postgres` user
 * (initdb refuses root). Started once per test file that needs it.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import pg from 'pg';
import { freePort } from './net.ts';
import { endsWithThisProcess, exited, hasExited } from './process.ts';

const BIN = (() => {
  const root = '/usr/lib/postgresql';
  const version = fs.readdirSync(root).sort().pop();
  return path.join(root, version!, 'bin');
})();

/** A running cluster. */
export interface Postgres {
  /** `postgresql://postgres@127.0.0.1:PORT` (no database). */
  url: string;
  /** Creates an empty database and returns its URL. */
  createDatabase(): Promise<string>;
  /** Stops the server (fast shutdown: every session is ended) and starts it again on the same port and data. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Waits until the server at `url` accepts a connection: bounded by its
 * readiness (or its exit), not by a guess of how long a start takes.
 */
async function untilAccepting(url: string, child: ChildProcess): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      const c = new pg.Client({ connectionString: `${url}/postgres` });
      await c.connect();
      await c.end();
      return;
    } catch (err) {
      if (hasExited(child)) throw new Error(`postgres exited (${child.exitCode ?? child.signalCode}) before accepting connections`, { cause: err });
      if (i > 6000) throw err; // five minutes of refusals from a live postmaster: it is stuck
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** SIGINT (fast shutdown) and waits for the postmaster to exit. */
async function shutDown(child: ChildProcess): Promise<void> {
  if (hasExited(child)) return;
  const done = exited(child);
  child.kill('SIGINT');
  await done;
}


let databases = 0;

/** Creates an empty database on the cluster at `url` (no database part) and returns its URL. */
export async function createDatabase(url: string, template?: string): Promise<string> {
  const name = `basalt_${process.pid}_${databases++}`;
  const c = new pg.Client({ connectionString: `${url}/postgres` });
  await c.connect();
  try {
    // A copy of a migrated template by files: a few tens of ms here, where migrating an empty one took 0.2-0.5 s.
    await c.query(template ? `CREATE DATABASE ${name} TEMPLATE ${template} STRATEGY = FILE_COPY` : `CREATE DATABASE ${name}`);
  } finally {
    await c.end();
  }
  return `${url}/${name}`;
}

/** Per cluster URL: the migrated database that test servers' databases are copied from. */
const templates = new Map<string, Promise<string>>();

/**
 * A database with Basalt's schema, for a test server: a copy of one this process
 * migrated once on the cluster at `url`. The server still runs its migrations at
 * start (and finds them applied); the migrations themselves ran on PostgreSQL in
 * making the template, and run from empty where a test is about them.
 */
export async function createMigratedDatabase(url: string): Promise<string> {
  let template = templates.get(url);
  if (!template) {
    template = (async () => {
      const made = await createDatabase(url);
      const { migrateToLatest, openDatabase } = await import('../../src/db/database.ts');
      const db = openDatabase(made);
      try {
        await migrateToLatest(db);
      } finally {
        await db.close(); // no session may be left on a template being copied
      }
      return made.slice(made.lastIndexOf('/') + 1);
    })();
    templates.set(url, template);
    template.catch(() => templates.delete(url));
  }
  return createDatabase(url, await template);
}

/** Starts a fresh cluster. */
export async function startPostgres(): Promise<Postgres> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-pg-'));
  fs.chmodSync(dir, 0o755);
  const data = path.join(dir, 'data');
  const sock = path.join(dir, 'sock');
  fs.mkdirSync(data);
  fs.mkdirSync(sock);
  execFileSync('chown', ['-R', 'postgres:postgres', dir]);
  const asPostgres = ['--reuid', 'postgres', '--regid', 'postgres', '--init-groups'];
  execFileSync('setpriv', [...asPostgres, path.join(BIN, 'initdb'), '-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync'], { stdio: 'ignore' });
  const port = await freePort();
  const url = `postgresql://postgres@127.0.0.1:${port}`;
  const launch = (): ChildProcess => endsWithThisProcess(spawn('setpriv', [...asPostgres, path.join(BIN, 'postgres'), '-D', data, '-h', '127.0.0.1', '-p', String(port), '-k', sock,
    '-c', 'max_connections=300', '-c', 'fsync=off', '-c', 'full_page_writes=off'], { stdio: 'ignore' }));
  let child = launch();
  await untilAccepting(url, child);
  return {
    url,
    createDatabase: () => createDatabase(url),
    async restart() {
      await shutDown(child);
      child = launch();
      await untilAccepting(url, child);
    },
    async stop() {
      await shutDown(child);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Runs the functional tests a file imports after this call on a real
 * PostgreSQL: starts a cluster for the file, makes every test server (and
 * every spawned one) use a fresh database on it, stops it after the file, and
 * adds a test that checks the servers really use PostgreSQL. The functional
 * suite is split over several such files (`test/postgres/functional-*.test.ts`),
 * each well inside the runner's per-file bound on a busy machine.
 */
export async function runFunctionalOnPostgres(): Promise<void> {
  const postgres = await startPostgres();
  process.env.TEST_BASALT_PG_URL = postgres.url;
  after(() => postgres.stop());
  test('these runs really use PostgreSQL', async (t) => {
    const { startTestServer } = await import('./server.ts');
    const s = await startTestServer(t);
    if (s.server.db.dialect !== 'postgres') throw new Error(`the test server uses ${s.server.db.dialect}`);
  });
}
