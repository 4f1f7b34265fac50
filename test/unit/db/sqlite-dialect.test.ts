/**
 * Basalt's SQLite dialect on a full database (issue 13, defect 4): a refused
 * write is a StateDirectoryUnwritableError with SQLite's own error as its
 * cause, a transaction SQLite already ended by itself keeps the error that
 * ended it (not "cannot rollback - no transaction is active"), reads go on, and
 * the episode ends with the next write that works. `max_page_count` makes
 * SQLite answer SQLITE_FULL exactly as a full filesystem does.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import fc from 'fast-check';
import { sql } from 'kysely';
import { openDatabase, migrateToLatest, type Db } from '../../../src/db/index.ts';
import { StateDirectoryUnwritableError } from '../../../src/errors/index.ts';

async function database(t: TestContext): Promise<{ db: Db; lines: string[] }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-sqlite-dialect-'));
  const lines: string[] = [];
  const log = { error: (_: object, msg: string) => lines.push(`error ${msg}`), warn: (_: object, msg: string) => lines.push(`warn ${msg}`), info: (_: object, msg: string) => lines.push(`info ${msg}`) };
  const db = openDatabase(`sqlite://${path.join(dir, 'basalt.sqlite')}`, { log });
  t.after(async () => {
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await migrateToLatest(db);
  await sql`create table filler (data blob)`.execute(db.kysely);
  return { db, lines };
}

/** Caps the database at its current size: the next write that needs a page is SQLITE_FULL. */
async function capAtCurrentSize(db: Db): Promise<number> {
  const [row] = (await sql<{ page_count: number }>`pragma page_count`.execute(db.kysely)).rows;
  await sql.raw(`pragma max_page_count = ${row!.page_count}`).execute(db.kysely);
  return row!.page_count;
}

test('a write to a full database is refused as StateDirectoryUnwritableError, reads go on, and the next write that works ends the episode', async (t) => {
  const { db, lines } = await database(t);
  await capAtCurrentSize(db);
  const blob = Buffer.alloc(64 * 1024, 7);
  for (let i = 0; i < 3; i++) {
    await assert.rejects(
      db.kysely.transaction().execute(async (tx) => {
        await sql`insert into filler (data) values (${blob})`.execute(tx);
      }),
      (err: unknown) => {
        assert.ok(err instanceof StateDirectoryUnwritableError, String(err));
        assert.equal(err.code, 'STATE_DIRECTORY_FULL');
        assert.equal(err.status, 413);
        assert.equal(err.retryable, true);
        assert.equal(err.full, true);
        assert.match(err.message, /state directory is full/);
        assert.equal((err.cause as { code?: string }).code, 'SQLITE_FULL');
        return true;
      },
    );
  }
  assert.equal(db.refusals?.active, true);
  assert.equal((await sql<{ n: number }>`select count(*) as n from filler`.execute(db.kysely)).rows[0]!.n, 0, 'nothing of the refused writes remains');
  assert.deepEqual(lines, ['error state directory full: database writes are refused until space is freed; reads keep working'], 'logged once for the episode');

  await sql.raw('pragma max_page_count = 1073741823').execute(db.kysely);
  await sql`insert into filler (data) values (${blob})`.execute(db.kysely);
  assert.equal(db.refusals?.active, false);
  assert.equal(lines.at(-1), 'info state directory writable again: database writes work');
});

test('a transaction SQLite already rolled back by itself keeps its own error (no "cannot rollback - no transaction is active")', async (t) => {
  const { db } = await database(t);
  await assert.rejects(
    db.kysely.transaction().execute(async (tx) => {
      await sql`insert into filler (data) values (${'x'})`.execute(tx);
      // What SQLite does by itself on some SQLITE_FULL and SQLITE_IOERR failures: the transaction is gone.
      await sql`rollback`.execute(tx);
      throw new Error('the real error');
    }),
    /the real error/,
  );
  assert.equal((await sql<{ n: number }>`select count(*) as n from filler`.execute(db.kysely)).rows[0]!.n, 0);
  // The connection is usable afterwards.
  await db.kysely.transaction().execute(async (tx) => { await sql`insert into filler (data) values (${'y'})`.execute(tx); });
  assert.equal((await sql<{ n: number }>`select count(*) as n from filler`.execute(db.kysely)).rows[0]!.n, 1);
});

test('two connections to one database file (two processes, or threads): transactions that read then write all count, and a connection waits for the other\'s write lock without blocking its thread', async (t) => {
  const { db: a } = await database(t);
  const file = (await sql<{ file: string }>`select file from pragma_database_list where name = 'main'`.execute(a.kysely)).rows[0]!.file;
  const b = openDatabase(`sqlite://${file}`);
  t.after(() => b.close());
  await sql`create table counter (n integer not null)`.execute(a.kysely);
  await sql`insert into counter (n) values (0)`.execute(a.kysely);
  // Read, let the other connection run, then write what was read plus one: a deferred
  // transaction whose snapshot went stale would fail its write with SQLITE_BUSY.
  const bump = (db: Db) => db.kysely.transaction().execute(async (tx) => {
    const { n } = (await sql<{ n: number }>`select n from counter`.execute(tx)).rows[0]!;
    await new Promise((r) => setImmediate(r));
    await sql`update counter set n = ${n + 1}`.execute(tx);
  });
  await Promise.all(Array.from({ length: 20 }, (_, i) => bump(i % 2 ? a : b)));
  assert.equal((await sql<{ n: number }>`select n from counter`.execute(b.kysely)).rows[0]!.n, 20, 'no increment lost, none refused');

  // A holds its write lock across a timer; B's write on its own waits for it on the event loop, which keeps turning.
  let ticks = 0;
  const ticker = setInterval(() => ticks++, 2);
  t.after(() => clearInterval(ticker));
  let released = 0;
  const holder = a.kysely.transaction().execute(async (tx) => {
    await sql`update counter set n = n + 100`.execute(tx);
    await new Promise((r) => setTimeout(r, 200)); // long enough for the ticks below on a busy machine
    released = Date.now();
  });
  await new Promise((r) => setImmediate(r));
  const before = ticks;
  await sql`update counter set n = n + 1`.execute(b.kysely);
  assert.ok(released > 0 && Date.now() >= released, 'the write ran once the other connection committed');
  assert.ok(ticks - before >= 5, `timers ran while the write waited (${ticks - before} ticks)`);
  await holder;
  assert.equal((await sql<{ n: number }>`select n from counter`.execute(a.kysely)).rows[0]!.n, 121);
});

test('transactions begun together share one COMMIT; one that fails rolls back alone, and the others commit', async (t) => {
  const { db } = await database(t);
  const commits = db.durability!;
  const before = commits.committed;
  const insert = (data: string, fail = false) => db.kysely.transaction().execute(async (tx) => {
    await sql`insert into filler (data) values (${data})`.execute(tx);
    if (fail) throw new Error(`${data} fails`);
  });
  const results = await Promise.allSettled([insert('a'), insert('b', true), insert('c'), insert('d')]);
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
  assert.match(String((results[1] as PromiseRejectedResult).reason), /b fails/);
  assert.deepEqual((await sql<{ data: string }>`select data from filler order by data`.execute(db.kysely)).rows.map((r) => r.data), ['a', 'c', 'd']);
  assert.equal(commits.committed, before + 1, 'one COMMIT for the four');
});

test('a transaction resolves only once its batch committed; a query outside a transaction commits the batch first', async (t) => {
  const { db } = await database(t);
  const commits = db.durability!;
  const before = commits.committed;
  let committed = false;
  const first = db.kysely.transaction().execute(async (tx) => {
    await sql`insert into filler (data) values (${'x'})`.execute(tx);
  }).then(() => { committed = true; });
  // Asked for before the batch's own COMMIT (at the next turn of the event loop): it runs first, and commits the batch.
  const read = sql<{ n: number }>`select count(*) as n from filler`.execute(db.kysely);
  assert.equal((await read).rows[0]!.n, 1);
  assert.equal(commits.committed, before + 1, 'committed before the read ran');
  await first;
  assert.equal(committed, true);
});

test('a member whose failure ends the whole transaction takes the batch with it: the members that had committed into it fail too, and nothing remains', async (t) => {
  const { db } = await database(t);
  const first = db.kysely.transaction().execute(async (tx) => {
    await sql`insert into filler (data) values (${'kept?'})`.execute(tx);
  });
  const second = db.kysely.transaction().execute(async (tx) => {
    await sql`insert into filler (data) values (${'y'})`.execute(tx);
    // What SQLite does by itself on some SQLITE_FULL and SQLITE_IOERR failures: the whole transaction is gone.
    await sql`rollback`.execute(tx);
    throw new Error('the real error');
  });
  await assert.rejects(second, /the real error/);
  await assert.rejects(first, /rolled back before its COMMIT/, 'not told it committed');
  assert.equal((await sql<{ n: number }>`select count(*) as n from filler`.execute(db.kysely)).rows[0]!.n, 0);
  await db.kysely.transaction().execute(async (tx) => { await sql`insert into filler (data) values (${'z'})`.execute(tx); });
  assert.equal((await sql<{ n: number }>`select count(*) as n from filler`.execute(db.kysely)).rows[0]!.n, 1);
});

test('a full database at the members\' writes: each member is refused, none is left half-written', async (t) => {
  const { db } = await database(t);
  await capAtCurrentSize(db);
  const blob = Buffer.alloc(64 * 1024, 7);
  const results = await Promise.allSettled(Array.from({ length: 4 }, () => db.kysely.transaction().execute(async (tx) => {
    await sql`insert into filler (data) values (${blob})`.execute(tx);
  })));
  for (const r of results) {
    assert.equal(r.status, 'rejected');
    assert.ok((r as PromiseRejectedResult).reason instanceof StateDirectoryUnwritableError, String((r as PromiseRejectedResult).reason));
  }
  assert.equal((await sql<{ n: number }>`select count(*) as n from filler`.execute(db.kysely)).rows[0]!.n, 0);
});

test('any mix of transactions (some failing, some pausing between statements) and writes and reads outside them: what resolved is there, what failed is not', async (t) => {
  const { db } = await database(t);
  const op = fc.oneof(
    fc.record({ kind: fc.constant('tx' as const), rows: fc.integer({ min: 1, max: 3 }), fail: fc.boolean(), pause: fc.boolean() }),
    fc.record({ kind: fc.constant('write' as const) }),
    fc.record({ kind: fc.constant('read' as const) }),
  );
  let run = 0;
  await fc.assert(fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 12 }), async (ops) => {
    const tag = `r${run++}`;
    const expected: string[] = [];
    await Promise.all(ops.map(async (o, i) => {
      const value = (k: number) => `${tag}-${i}-${k}`;
      if (o.kind === 'read') {
        await sql`select count(*) from filler`.execute(db.kysely);
        return;
      }
      if (o.kind === 'write') {
        await sql`insert into filler (data) values (${value(0)})`.execute(db.kysely);
        expected.push(value(0));
        return;
      }
      try {
        await db.kysely.transaction().execute(async (tx) => {
          for (let k = 0; k < o.rows; k++) {
            await sql`insert into filler (data) values (${value(k)})`.execute(tx);
            if (o.pause) await new Promise((r) => setImmediate(r));
          }
          if (o.fail) throw new Error('body fails');
        });
        assert.equal(o.fail, false, 'a failing body is never reported committed');
        for (let k = 0; k < o.rows; k++) expected.push(value(k));
      } catch (err) {
        assert.equal(o.fail, true, String(err));
      }
    }));
    const rows = (await sql<{ data: string }>`select data from filler where data like ${`${tag}-%`} order by data`.execute(db.kysely)).rows.map((r) => r.data);
    assert.deepEqual(rows, expected.sort());
  }), { numRuns: 60, seed: 20261206 });
});
