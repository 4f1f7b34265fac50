/**
 * Two Basalt processes on one PostgreSQL, each with its own state directory
 * and one file backend: the tests of work between backends that no one
 * process serves (moves, replication).
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { startPostgres } from './postgres.ts';
import { spawnBasalt, type Spawned } from './process.ts';
import { FAST_TIMINGS, tempStateDir } from './server.ts';

/** A configuration file in `dir` serving one file backend named `name`, with `more` lines in its section. */
export function backendConfig(dir: string, name: string, more: readonly string[] = []): string {
  const file = path.join(dir, `${name}.ini`);
  fs.writeFileSync(file, ['[DEFAULT]', `enabled_backends = ${name}`, `[${name}]`, 'volume_driver = file', `volume_backend_name = ${name}`, ...more].join('\n'));
  return file;
}

/** What {@link twoProcesses} sets up: the database URL, two state directories, the environment both share, and the children to kill at the end. */
export interface TwoProcesses {
  database: string;
  stateA: string;
  stateB: string;
  common: Record<string, string>;
  /** Children pushed here are killed (SIGKILL) after the test, before PostgreSQL stops. */
  procs: ChildProcess[];
}

/** Starts PostgreSQL with a fresh database and makes two state directories; everything goes after the test. */
export async function twoProcesses(t: TestContext): Promise<TwoProcesses> {
  const pgServer = await startPostgres();
  const database = await pgServer.createDatabase();
  const procs: ChildProcess[] = [];
  t.after(() => { for (const p of procs) p.kill('SIGKILL'); });
  t.after(() => pgServer.stop());
  const [stateA, stateB] = [tempStateDir(t), tempStateDir(t)];
  const common = { ...FAST_TIMINGS, BASALT_DATABASE__CONNECTION: database, BASALT_PORT: '0', BASALT_NBD_PORT: '0', BASALT_LOG_LEVEL: 'info' };
  return { database, stateA, stateB, common, procs };
}

/** Alpha replicating to beta, each in its process: see {@link replicatingPair}. */
export interface ReplicatingPair {
  stateA: string;
  stateB: string;
  /** Alpha's process: all roles, its backend naming beta as its replication target. */
  a: Spawned;
  /** Beta's process: API and volume roles. */
  b: Spawned;
  /** Starts alpha's process again on its state directory (after a kill); its child goes to `procs`. */
  startAlpha(): Promise<Spawned>;
}

/**
 * Starts alpha (`replication_device = backend_id:beta`) and beta, each on its
 * own state directory under `dir` (the drills put `dir` on a reflink
 * filesystem), with `common`'s environment; their children go to `procs`.
 * With `o.hosts`, alpha and beta get those host names (`BASALT_HOST`), as
 * on two machines: each then reaches the other's exports over TCP with
 * TLS-PSK instead of through its Unix socket.
 */
export async function replicatingPair(common: Record<string, string>, procs: ChildProcess[], dir: string, o: { hosts?: readonly [string, string] } = {}): Promise<ReplicatingPair> {
  const stateA = path.join(dir, 'alpha-state');
  const stateB = path.join(dir, 'beta-state');
  for (const d of [stateA, stateB]) fs.mkdirSync(d);
  const alphaConfig = backendConfig(stateA, 'alpha', ['replication_device = backend_id:beta']);
  const startAlpha = async (): Promise<Spawned> => {
    const p = await spawnBasalt({ ...common, ...(o.hosts ? { BASALT_HOST: o.hosts[0] } : {}), BASALT_STATE_DIR: stateA, BASALT_CONFIG: alphaConfig });
    procs.push(p.child);
    return p;
  };
  const a = await startAlpha();
  const b = await spawnBasalt({ ...common, ...(o.hosts ? { BASALT_HOST: o.hosts[1] } : {}), BASALT_STATE_DIR: stateB, BASALT_CONFIG: backendConfig(stateB, 'beta') }, 'api,volume');
  procs.push(b.child);
  return { stateA, stateB, a, b, startAlpha };
}
