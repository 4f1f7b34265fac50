/**
 * A full PostgreSQL disk (issue 13): with Basalt's tables in a tablespace on a
 * small tmpfs that fills up while the server runs, writes are refused as on a
 * full SQLite state directory — 413 `overLimit` naming the database's disk,
 * with `Retry-After`, never a bare 500 — reads keep working, nothing is
 * half-created, and writes work again by themselves once space is freed.
 * Needs root (mounts a tmpfs, runs PostgreSQL as its user).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import pg from 'pg';
import { startPostgres, type Postgres } from '../helpers/postgres.ts';
import { fill, smallFilesystem, unmountAfter } from '../helpers/small-filesystem.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const isRoot = process.getuid?.() === 0;

let postgres: Postgres | undefined;
after(() => postgres?.stop());

/** Runs `text` on the database at `url`. */
async function query<T = Record<string, unknown>>(url: string, text: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(text, params)).rows as T[];
  } finally {
    await c.end();
  }
}

test('a full PostgreSQL disk refuses writes with 413 naming the database disk, keeps reads, and recovers by itself (issue 13)', { skip: !isRoot && 'needs root to mount a filesystem', timeout: 300_000 }, async (t) => {
  postgres = await startPostgres();
  const url = await postgres.createDatabase();
  const disk = smallFilesystem(16 * 1024);
  // A tablespace needs an empty folder its server owns; the filler goes beside it.
  const location = path.join(disk, 'tablespace');
  fs.mkdirSync(location);
  execFileSync('chown', ['postgres:postgres', location]);
  const name = `small_${process.pid}`;
  await query(url, `create tablespace ${name} location '${location}'`);
  // Basalt's tables (made by its migrations) go to the small disk; the catalogue and the WAL stay on the data directory's.
  await query(url, `alter database ${new URL(url).pathname.slice(1)} set default_tablespace = ${name}`);
  t.after(() => query(`${postgres!.url}/postgres`, `drop tablespace if exists ${name}`).catch(() => undefined));

  const logLines: string[] = [];
  const s = await startTestServer(t, { logLines, env: { BASALT_DATABASE__CONNECTION: url } });
  unmountAfter(t, disk);
  assert.deepEqual(await query(url, `select tablespace from pg_tables where tablename = 'volumes'`), [{ tablespace: name }]);

  // The volumes table has no page yet: the first create must extend it, which the full disk refuses.
  const filler = fill(disk);
  const footprint = async (): Promise<unknown> => ({
    volumes: await query(url, 'select count(*)::int as n from volumes'),
    volumeJobs: await query(url, `select count(*)::int as n from jobs where payload like '%volume%'`),
    usage: await query(url, 'select resource, in_use from quota_usages where project_id = $1 order by resource', [PROJECT]),
  });
  const before = await footprint();
  for (let i = 0; i < 3; i++) {
    const refused = await s.request('POST', `${V}/volumes`, { volume: { size: 1, name: 'refused' } });
    assert.equal(refused.status, 413, JSON.stringify(refused.body));
    assert.equal(refused.body.overLimit.message, 'The disk of Basalt\'s PostgreSQL database is full: writes are refused until space is freed.');
    assert.equal(refused.headers.get('retry-after'), '30', 'a client is told when to try again');
  }
  assert.deepEqual(await footprint(), before, 'nothing half-created: no row, no job, usage unchanged');
  for (const read of ['/volumes', '/volumes/detail', '/types', `/os-quota-sets/${PROJECT}?usage=True`, '/limits', '/os-services']) {
    assert.equal((await s.request('GET', `${V}${read}`)).status, 200, `GET ${read} works on a full disk`);
  }

  fs.rmSync(filler);
  const created = await waitFor('a create to be accepted again', async () => {
    const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1, name: 'after' } });
    if (r.status !== 202) assert.equal(r.status, 413, JSON.stringify(r.body));
    return r.status === 202 ? r : undefined;
  });
  await waitForStatus(s, created.body.volume.id, 'available');

  const entries = logLines.map((l) => JSON.parse(l) as { level: number; msg: string; err?: { code?: string } });
  const problems = entries.filter((e) => e.level >= 50);
  assert.ok(problems.length >= 1, 'the episode is logged');
  for (const p of problems) {
    assert.match(p.msg, /^PostgreSQL database disk full: database writes are refused/, `no other error, no 500: ${JSON.stringify(problems.map((e) => e.msg))}`);
    assert.equal(p.err?.code, '53100', 'PostgreSQL\'s own error is kept');
  }
  assert.ok(entries.some((e) => /PostgreSQL database writable again/.test(e.msg)), 'the end of the episode is logged');
});
