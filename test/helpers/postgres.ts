/**
 * A real PostgreSQL from Debian for tests: a private cluster in a temporary
 * folder, listening on a free loopback port, run as the `postgres` user
 * (initdb refuses root). Started once per test file that needs it.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from './net.ts';

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
  stop(): Promise<void>;
}


let databases = 0;

/** Creates an empty database on the cluster at `url` (no database part) and returns its URL. */
export async function createDatabase(url: string): Promise<string> {
  const name = `basalt_${process.pid}_${databases++}`;
  const c = new pg.Client({ connectionString: `${url}/postgres` });
  await c.connect();
  await c.query(`CREATE DATABASE ${name}`);
  await c.end();
  return `${url}/${name}`;
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
  const child: ChildProcess = spawn('setpriv', [...asPostgres, path.join(BIN, 'postgres'), '-D', data, '-h', '127.0.0.1', '-p', String(port), '-k', sock,
    '-c', 'max_connections=300', '-c', 'fsync=off', '-c', 'full_page_writes=off'], { stdio: 'ignore' });
  const url = `postgresql://postgres@127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      const c = new pg.Client({ connectionString: `${url}/postgres` });
      await c.connect();
      await c.end();
      break;
    } catch (err) {
      if (i > 200) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    url,
    createDatabase: () => createDatabase(url),
    async stop() {
      child.kill('SIGINT');
      await new Promise((r) => child.once('exit', r));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
