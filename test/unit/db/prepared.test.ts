/**
 * Prepared queries (issue 12, part 6): built once, each call gets its own
 * arguments, each database its own compilation, and a transaction sees its
 * own writes through them. (PostgreSQL runs them in every test/postgres file.)
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { migrateToLatest, openDatabase, prepared, type Db } from '../../../src/db/index.ts';

async function database(t: import('node:test').TestContext): Promise<Db> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-prepared-'));
  const db = openDatabase(`sqlite://${path.join(dir, 'db.sqlite')}`);
  t.after(async () => {
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await migrateToLatest(db);
  return db;
}

const LIMITS = prepared<{ projectId: string }>()((q, a) =>
  q.selectFrom('quotas').select(['resource', 'hard_limit']).where('project_id', '=', a('projectId')).orderBy('resource'));
const SET = prepared<{ projectId: string; resource: string; limit: number; at: string | undefined }>()((q, a) =>
  q.insertInto('quotas').values({ project_id: a('projectId'), resource: a('resource'), hard_limit: a('limit'), updated_at: a('at') as string }));

test('prepared: each call runs with its own arguments, on each database it is given', async (t) => {
  const [one, two] = [await database(t), await database(t)];
  await SET.run(one.kysely, { projectId: 'p1', resource: 'volumes', limit: 5, at: 'now' });
  await SET.run(one.kysely, { projectId: 'p2', resource: 'volumes', limit: 7, at: 'now' });
  await SET.run(two.kysely, { projectId: 'p1', resource: 'gigabytes', limit: 9, at: 'now' });
  assert.deepEqual(await LIMITS.all(one.kysely, { projectId: 'p1' }), [{ resource: 'volumes', hard_limit: 5 }]);
  assert.deepEqual(await LIMITS.all(one.kysely, { projectId: 'p2' }), [{ resource: 'volumes', hard_limit: 7 }]);
  assert.deepEqual(await LIMITS.all(two.kysely, { projectId: 'p1' }), [{ resource: 'gigabytes', hard_limit: 9 }]);
  assert.equal(await LIMITS.first(two.kysely, { projectId: 'nobody' }), undefined);
  // The same answers as the query built afresh.
  const built = await one.kysely.selectFrom('quotas').select(['resource', 'hard_limit']).where('project_id', '=', 'p2').orderBy('resource').execute();
  assert.deepEqual(await LIMITS.all(one.kysely, { projectId: 'p2' }), built);
});

test('prepared: inside a transaction it sees the transaction’s writes, and a rollback takes them back', async (t) => {
  const db = await database(t);
  await assert.rejects(db.kysely.transaction().execute(async (tx) => {
    await SET.run(tx, { projectId: 'p', resource: 'volumes', limit: 1, at: 'now' });
    assert.equal((await LIMITS.all(tx, { projectId: 'p' })).length, 1);
    throw new Error('roll back');
  }), /roll back/);
  assert.deepEqual(await LIMITS.all(db.kysely, { projectId: 'p' }), []);
});

test('prepared: an undefined argument is NULL, which a NOT NULL column refuses', async (t) => {
  const db = await database(t);
  await assert.rejects(SET.run(db.kysely, { projectId: 'p', resource: 'volumes', limit: 1, at: undefined }), /NOT NULL/);
});
