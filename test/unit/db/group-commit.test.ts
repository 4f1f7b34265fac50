/**
 * Group commit (issue 12, part 6): a commit is answered only after a flush
 * that started after it; commits made meanwhile share the next flush; a
 * failed flush is an error for its waiters and the next one is tried afresh.
 * And through a real SQLite database: what `durable()` flushes.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { GroupCommit, openDatabase, migrateToLatest } from '../../../src/db/index.ts';

/** A log file and a flush the test releases by hand. */
function harness(t: import('node:test').TestContext) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-group-commit-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const log = path.join(dir, 'db-wal');
  fs.writeFileSync(log, '');
  const pending: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  const commits = new GroupCommit(log, () => new Promise<void>((resolve, reject) => pending.push({ resolve, reject })));
  t.after(() => commits.close());
  const settled = (p: Promise<void>) => { let done = false; p.then(() => { done = true; }, () => { done = true; }); return () => done; };
  /** Waits until `n` flushes are waiting to be released. */
  const flushesWaiting = async (n: number) => {
    while (pending.length !== n) await new Promise((r) => setTimeout(r, 1));
  };
  return { commits, pending, settled, flushesWaiting };
}

test('group commit: commits written before a flush share it; a commit written during it waits for the next', async (t) => {
  const { commits, pending, settled, flushesWaiting } = harness(t);
  const early = [commits.noteCommit(), commits.noteCommit(), commits.noteCommit()].map((seq) => commits.durable(seq));
  const earlyDone = early.map(settled);
  await flushesWaiting(1);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(pending.length, 1, 'one flush for three commits');
  const late = commits.durable(commits.noteCommit());
  const lateDone = settled(late);
  pending.shift()!.resolve();
  await Promise.all(early);
  assert.ok(earlyDone.every((d) => d()));
  await flushesWaiting(1);
  assert.equal(lateDone(), false, 'the flush that was running when it committed does not cover it');
  pending.shift()!.resolve();
  await late;
  assert.equal(commits.flushes, 2);
  await commits.durable(2); // already durable: no flush
  assert.equal(commits.flushes, 2);
});

test('group commit: a failed flush fails its waiters; the next commit is flushed again', async (t) => {
  const { commits, pending, flushesWaiting } = harness(t);
  const first = commits.durable(commits.noteCommit());
  await flushesWaiting(1);
  pending.shift()!.reject(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
  await assert.rejects(first, /EIO/);
  const second = commits.durable(commits.noteCommit());
  await flushesWaiting(1);
  pending.shift()!.resolve();
  await second;
});

test('group commit on SQLite: commits note themselves; durable() flushes them together, and only when something was written', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-group-commit-'));
  const db = openDatabase(`sqlite://${dir}/basalt.db`);
  t.after(async () => { await db.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  await migrateToLatest(db);
  await db.durable();
  const commits = db.durability!;
  const [flushed, committed] = [commits.flushes, commits.committed];
  await db.kysely.selectFrom('volumes').select('id').execute();
  await db.kysely.transaction().execute(async (tx) => {
    await tx.updateTable('volumes').set({ name: 'n' }).where('id', '=', 'none').execute();
  });
  assert.equal(commits.committed, committed, 'a read, and a transaction that changed no row, are not commits to flush');
  await db.durable();
  assert.equal(commits.flushes, flushed, 'nothing to flush');
  await Promise.all(Array.from({ length: 20 }, (_, i) => db.kysely.transaction().execute(async (tx) => {
    await tx.insertInto('messages').values(messageRow(`m${i}`)).execute();
  })));
  await db.kysely.deleteFrom('messages').where('id', '=', 'm0').execute();
  assert.equal(commits.committed, committed + 2, 'the twenty transactions begun together shared one COMMIT (a batch); the write outside one is one more');
  assert.equal(commits.flushes, flushed, 'a commit does not wait for a flush');
  await Promise.all([db.durable(), db.durable(), db.durable()]);
  assert.equal(commits.flushes, flushed + 1, 'one flush for all of them');
  assert.equal((await db.kysely.selectFrom('messages').select('id').execute()).length, 19);
});

function messageRow(id: string) {
  return {
    id, project_id: 'p', request_id: 'r', resource_type: 'VOLUME', resource_uuid: null, event_id: 'VOLUME_000001_001', message_level: 'ERROR',
    action_id: '001', detail_id: '001', detail_args: null, created_at: new Date().toISOString(), expires_at: new Date().toISOString(),
  };
}
