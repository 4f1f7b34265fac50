/** Background work defers to the API's requests in flight (common/foreground.ts), on a real in-memory SQLite. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { Foreground } from '../../../src/common/index.ts';
import { migrateToLatest, openDatabase } from '../../../src/db/index.ts';
import { JobQueue, Worker, type JobKind } from '../../../src/jobs/index.ts';

/** Whether `p` settled within a few turns of the event loop. */
async function settledSoon(p: Promise<unknown>): Promise<boolean> {
  let settled = false;
  void p.then(() => { settled = true; });
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  return settled;
}

test('quiet: at once when nothing was in flight lately, idleMs after the last request ends, or after waitMs at the most', async () => {
  const fg = new Foreground(60_000, 30);
  assert.equal(await settledSoon(fg.quiet()), true, 'idle: no wait');

  const leaveA = fg.enter();
  const leaveB = fg.enter();
  assert.equal(fg.inFlight, 2);
  const waiting = fg.quiet();
  assert.equal(await settledSoon(waiting), false, 'two in flight: waits');
  leaveA();
  leaveA(); // a second call changes nothing
  assert.equal(fg.inFlight, 1);
  assert.equal(await settledSoon(waiting), false, 'one still in flight: still waits');
  leaveB();
  assert.equal(fg.inFlight, 0);
  assert.equal(await settledSoon(waiting), false, 'the last one just ended: waits for the idle window');
  // A client sending its next request right after its answer: the window starts again.
  const leaveC = fg.enter();
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(await settledSoon(waiting), false, 'a request came within the window: still waits');
  const ended = performance.now();
  leaveC();
  await waiting;
  assert.ok(performance.now() - ended >= 29, 'went ahead once nothing was in flight for idleMs');
  assert.equal(await settledSoon(fg.quiet()), true, 'idle for longer than the window: no wait');

  // A request that never ends holds a claim for waitMs only.
  const short = new Foreground(30);
  short.enter();
  await short.quiet();
  assert.equal(short.inFlight, 1, 'went ahead with the request still in flight');
  assert.equal(await settledSoon(new Foreground(0).quiet()), true, 'waitMs 0 never waits');
});

test('a worker claims only once the requests in flight have ended (or waitMs passed); a job it runs already is not held', async (t) => {
  const db = openDatabase('sqlite://:memory:');
  t.after(() => db.close());
  await migrateToLatest(db);
  const foreground = new Foreground(60_000);
  const queue = new JobQueue(db, { now: () => Date.now() }, { maxAttempts: 3, leaseMs: 10_000, retryDelayMs: 1, foreground });
  const kind: JobKind<{ n: number }> = { kind: 'test.fg', version: 1, minVersion: 1, resourceType: 'volume', parse: (p) => p as { n: number }, onFailure: async () => undefined };
  const ran: number[] = [];
  const worker = new Worker({
    queue, owner: 'W', targets: ['t'], concurrency: 2, pollMs: 20, log: pino({ level: 'silent' }),
    handlers: [{ kind, async run(ctx, p) { ran.push(p.n); await ctx.complete(); } }],
  });
  worker.start();
  t.after(() => worker.stop());
  const enqueue = (n: number) => queue.transaction((_tx, enq) => enq(kind, { target: 't', resourceId: `r${n}`, payload: { n } }));
  const done = async (n: number) => {
    for (const deadline = Date.now() + 5000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 10))) {
      if (ran.includes(n)) return;
    }
    assert.fail(`job ${n} did not run`);
  };

  await enqueue(1);
  await done(1); // nothing in flight: claimed at once

  const leave = foreground.enter();
  await enqueue(2);
  // Polls come and go (pollMs 20) while a request is in flight: the claim waits.
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(ran, [1], 'job 2 waits for the request in flight');
  leave();
  await done(2);
  assert.deepEqual(ran, [1, 2]);
});
