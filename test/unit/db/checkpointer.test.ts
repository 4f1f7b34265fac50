/**
 * Checkpoints on their own thread (issue 12, part 6): once the thread runs,
 * the serving connection never checkpoints by itself, yet the log is copied
 * into the database; a thread that cannot start changes nothing.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import SQLite from 'better-sqlite3';
import { Checkpointer } from '../../../src/db/checkpointer.ts';

function database(t: import('node:test').TestContext): { file: string; sqlite: SQLite.Database } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-checkpointer-'));
  const file = path.join(dir, 'db.sqlite');
  const sqlite = new SQLite(file);
  t.after(() => {
    if (sqlite.open) sqlite.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.exec('create table t (id integer primary key, v text)');
  return { file, sqlite };
}

test('checkpointer: the serving connection stops checkpointing and the thread copies the log into the database', async (t) => {
  const { file, sqlite } = database(t);
  const before = fs.statSync(file).size;
  const checkpointer = await Checkpointer.start(file, sqlite, { everyMs: 20 });
  assert.ok(checkpointer, 'the thread started');
  assert.equal(sqlite.pragma('wal_autocheckpoint', { simple: true }), 0);
  const insert = sqlite.prepare('insert into t (v) values (?)');
  // 3000 commits of a 1 KiB row: past SQLite's own threshold (1000 pages) several times over.
  for (let i = 0; i < 3000; i++) insert.run('x'.repeat(1024));
  const deadline = Date.now() + 30_000;
  while (fs.statSync(file).size < before + 3000 * 1024 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.ok(fs.statSync(file).size >= before + 3000 * 1024, 'the rows reached the database file');
  await checkpointer.close();
  assert.equal(sqlite.prepare('select count(*) from t').pluck().get(), 3000);
  sqlite.close();
  const again = new SQLite(file, { readonly: true });
  assert.equal(again.prepare('select count(*) from t').pluck().get(), 3000);
  again.close();
});

test('checkpointer: a thread that cannot open the database changes nothing and says why', async (t) => {
  const { file, sqlite } = database(t);
  const failures: Error[] = [];
  const checkpointer = await Checkpointer.start(`${file}.missing`, sqlite, { onFailure: (err) => failures.push(err) });
  assert.equal(checkpointer, undefined);
  assert.equal(sqlite.pragma('wal_autocheckpoint', { simple: true }), 1000);
  assert.equal(failures.length, 1);
  assert.match(failures[0]!.message, /unable to open|does not exist|directory/i);
});
