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
