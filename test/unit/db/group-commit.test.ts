/**
 * Group commit (issue 12, part 6): a commit is answered only after a flush
 * that started after it; commits made meanwhile share the next flush; a
 * failed flush is an error for its waiters and the next one is tried afresh.
 * And through a real SQLite database: every write waits for a flush of its log.
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

test('group commit on SQLite: a write waits for a flush of the log, a read does not, and concurrent transactions share flushes', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-group-commit-'));
  const db = openDatabase(`sqlite://${dir}/basalt.db`);
  t.after(async () => { await db.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  await migrateToLatest(db);
  const flushes = () => db.durability!.flushes;
  const before = flushes();
  await db.kysely.selectFrom('volumes').select('id').execute();
  assert.equal(flushes(), before, 'a read is not flushed');
  await db.kysely.transaction().execute(async (tx) => {
    await tx.updateTable('volumes').set({ name: 'n' }).where('id', '=', 'none').execute();
  });
  assert.equal(flushes(), before, 'a transaction that changed no row is not flushed');
  await db.kysely.insertInto('messages').values(messageRow('first')).execute();
  assert.equal(flushes(), before + 1, 'a write outside a transaction is flushed before it returns');
  await db.kysely.deleteFrom('messages').execute();
  const one = flushes();
  await Promise.all(Array.from({ length: 20 }, (_, i) => db.kysely.transaction().execute(async (tx) => {
    await tx.insertInto('messages').values(messageRow(`m${i}`)).execute();
  })));
  const twenty = flushes() - one;
  assert.ok(twenty >= 1 && twenty < 20, `20 concurrent commits took ${twenty} flushes`);
  assert.equal((await db.kysely.selectFrom('messages').select('id').execute()).length, 20);
});

function messageRow(id: string) {
  return {
    id, project_id: 'p', request_id: 'r', resource_type: 'VOLUME', resource_uuid: null, event_id: 'VOLUME_000001_001', message_level: 'ERROR',
    action_id: '001', detail_id: '001', detail_args: null, created_at: new Date().toISOString(), expires_at: new Date().toISOString(),
  };
}
