/**
 * Issue 13, defect 11: the PostgreSQL notification session comes back after
 * its connection is lost — an administrator's `pg_terminate_backend` and a
 * restart of the database — so wake-ups and fences keep arriving. The session
 * says so in the log: one warning when lost, one info line when restored.
 */
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { after, test } from 'node:test';
import pg from 'pg';
import { openDatabase, type Db, type ListenerLog } from '../../src/db/index.ts';
import { JobQueue } from '../../src/jobs/index.ts';
import { systemClock } from '../../src/common/index.ts';
import { FENCE_CHANNEL } from '../../src/volume/index.ts';
import { startPostgres } from '../helpers/postgres.ts';

const postgres = await startPostgres();
after(() => postgres.stop());

/** A log that keeps its lines and announces each one. */
function recordingLog(): ListenerLog & { lines: Array<{ level: string; msg: string }>; events: EventEmitter } {
  const lines: Array<{ level: string; msg: string }> = [];
  const events = new EventEmitter();
  const add = (level: string) => (_obj: object, msg: string) => { lines.push({ level, msg }); events.emit(level, msg); };
  return { lines, events, warn: add('warn'), info: add('info') };
}

/** A listening process (db + its queue's wake-ups) and another that sends. */
async function pair(t: { after: (fn: () => Promise<void>) => void }) {
  const url = await postgres.createDatabase();
  const log = recordingLog();
  const db = openDatabase(url, { log });
  const sender = openDatabase(url);
  const queue = new JobQueue(db, systemClock, { maxAttempts: 1, leaseMs: 1000, retryDelayMs: 10 });
  const fences: string[] = [];
  const fenced = new EventEmitter();
  const stops = [
    await db.listen(FENCE_CHANNEL, (name) => { fences.push(name); fenced.emit('fence', name); }),
    await queue.listenForWakeups(),
  ];
  t.after(async () => {
    for (const stop of stops) await stop();
    await db.close();
    await sender.close();
  });
  return { url, db: db as Db, sender, queue, log, fenced };
}

/** Sends a fence and a wake-up and waits until both arrive (bounded by their arrival, not a guess). */
async function bothArrive(p: Awaited<ReturnType<typeof pair>>, tag: string): Promise<void> {
  const fence = once(p.fenced, 'fence');
  const wake = new Promise<void>((resolve) => {
    const on = (target: string) => { if (target === `target-${tag}`) { p.queue.wakeups.off('wake', on); resolve(); } };
    p.queue.wakeups.on('wake', on);
  });
  await p.sender.notify(FENCE_CHANNEL, `export-${tag}`);
  await p.sender.notify('basalt_jobs', `target-${tag}`);
  assert.deepEqual(await fence, [`export-${tag}`]);
  await wake;
}

/** Resolves when the log has said `restored` `n` times in all. */
async function restored(log: ReturnType<typeof recordingLog>, n: number): Promise<void> {
  while (log.lines.filter((l) => l.level === 'info').length < n) await once(log.events, 'info');
}

test('issue 13 defect 11: after pg_terminate_backend the listener reconnects and fences and wake-ups still arrive', { timeout: 120_000 }, async (t) => {
  const p = await pair(t);
  await bothArrive(p, 'before');

  const admin = new pg.Client({ connectionString: p.url });
  await admin.connect();
  t.after(() => admin.end());
  const killed = await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'basalt-listen-%' AND datname = current_database()`);
  assert.equal(killed.rowCount, 2, 'both sessions (fences, wake-ups) were found and ended');

  await restored(p.log, 2);
  await bothArrive(p, 'after');
  assert.deepEqual(p.log.lines.map((l) => l.level).sort(), ['info', 'info', 'warn', 'warn'], 'one warning and one info line per session');
});

test('issue 13 defect 11: after a restart of PostgreSQL the listener reconnects and fences and wake-ups still arrive', { timeout: 120_000 }, async (t) => {
  const p = await pair(t);
  await bothArrive(p, 'before');
  await postgres.restart();
  await restored(p.log, 2);
  await bothArrive(p, 'after');
  assert.equal(p.log.lines.filter((l) => l.level === 'warn').length, 2, 'a lost session is logged once, however many attempts it takes');
});
