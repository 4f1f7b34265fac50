/** The job queue on a real (in-memory) SQLite with a controlled clock. */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { sql } from 'kysely';
import pino from 'pino';
import type { Clock } from '../../../src/common/index.ts';
import { migrateToLatest, openDatabase, type JobRow } from '../../../src/db/index.ts';
import { BasaltError } from '../../../src/errors/index.ts';
import { JobQueue, LeaseLostError, Sweeper, Worker, type JobKind, type Tx } from '../../../src/jobs/index.ts';

class FakeClock implements Clock {
  constructor(public ms = 1_000_000) {}
  now(): number { return this.ms; }
}

interface P { n: number }

async function setup(t: TestContext) {
  const db = openDatabase('sqlite://:memory:');
  t.after(() => db.close());
  await migrateToLatest(db);
  const clock = new FakeClock();
  const queue = new JobQueue(db, clock, { maxAttempts: 3, leaseMs: 1000, retryDelayMs: 100 });
  const failures: Array<{ payload: P; error: BasaltError }> = [];
  const kind: JobKind<P> = {
    kind: 'test.thing', version: 1, minVersion: 1, resourceType: 'volume',
    parse: (p) => p as P,
    onFailure: async (_tx: Tx, payload: P, _job: JobRow, error: BasaltError) => { failures.push({ payload, error }); },
  };
  const enqueue = (n: number) => queue.transaction((_tx, enq) => enq(kind, { target: 't', resourceId: `r${n}`, payload: { n } }));
  return { db, clock, queue, kind, failures, enqueue };
}

test('a claim leases the job; an expired lease lets another owner take it over', async (t) => {
  const { clock, queue, enqueue } = await setup(t);
  await enqueue(1);
  const a = await queue.claim('A', ['t'], ['test.thing']);
  assert.equal(a?.attempts, 1);
  assert.equal(a?.lease_owner, 'A');
  assert.equal(a?.last_error, null);
  assert.equal(queue.takeovers, 0, 'a queued job claimed is no take-over');
  assert.equal(await queue.claim('B', ['t'], ['test.thing']), undefined, 'a leased job is not claimable');
  assert.equal(await queue.claim('B', ['other'], ['test.thing']), undefined, 'other targets see nothing');
  clock.ms += 500;
  assert.ok(await queue.renew(a!.id, 'A'));
  clock.ms += 900;
  assert.equal(await queue.claim('B', ['t'], ['test.thing']), undefined, 'renewal pushed the expiry');
  clock.ms += 200;
  const b = await queue.claim('B', ['t'], ['test.thing']);
  assert.equal(b?.id, a!.id);
  assert.equal(b?.attempts, 2);
  assert.equal(queue.takeovers, 1, 'counted for /metrics');
  assert.match(b!.last_error!, /^lease ran out; taken over by B at /, 'the row says so');
  assert.equal(await queue.renew(a!.id, 'A'), false, 'the old owner lost its lease');
  await assert.rejects(queue.transaction((tx) => queue.markDone(tx, a!.id, 'A')), LeaseLostError);
  await queue.transaction((tx) => queue.markDone(tx, a!.id, 'B'));
  clock.ms += 10_000;
  assert.equal(await queue.claim('C', ['t'], ['test.thing']), undefined, 'a done job is never claimed again');
});

test('retries back off exponentially; a dead incarnation\'s leases are released at once', async (t) => {
  const { clock, queue, enqueue } = await setup(t);
  await enqueue(1);
  const j1 = (await queue.claim('A', ['t'], ['test.thing']))!;
  assert.ok(await queue.retryLater(j1, 'A', 'flaky'));
  clock.ms += 99;
  assert.equal(await queue.claim('A', ['t'], ['test.thing']), undefined);
  clock.ms += 1;
  const j2 = (await queue.claim('A', ['t'], ['test.thing']))!;
  assert.equal(j2.attempts, 2);
  assert.ok(await queue.retryLater(j2, 'A', 'flaky'));
  clock.ms += 199;
  assert.equal(await queue.claim('A', ['t'], ['test.thing']), undefined, 'second delay is doubled');
  clock.ms += 1;
  const j3 = (await queue.claim('A', ['t'], ['test.thing']))!;
  await queue.transaction((tx) => queue.markDone(tx, j3.id, 'A'));
  await enqueue(2);
  await queue.claim('dead', ['t'], ['test.thing']);
  assert.equal(await queue.claim('B', ['t'], ['test.thing']), undefined);
  assert.equal(await queue.releaseLeasesOf('dead'), 1);
  assert.equal((await queue.claim('B', ['t'], ['test.thing']))?.attempts, 2, 'taken over without waiting for the lease');
});

test('a retry\'s delay doubles up to 64 times the first, however many attempts (takeovers count) came before', async (t) => {
  const { clock, queue, enqueue } = await setup(t);
  await enqueue(1);
  const job = (await queue.claim('A', ['t'], ['test.thing']))!;
  assert.ok(await queue.retryLater({ ...job, attempts: 20 }, 'A', 'flaky'));
  clock.ms += 6399;
  assert.equal(await queue.claim('A', ['t'], ['test.thing']), undefined);
  clock.ms += 1;
  assert.ok(await queue.claim('A', ['t'], ['test.thing']), 'due at 64 × 100 ms, not 2^19 × 100 ms');
});

test('the sweeper fails a job that ran out of attempts, through its kind', async (t) => {
  const { clock, queue, kind, failures, enqueue } = await setup(t);
  await enqueue(7);
  for (let i = 0; i < 3; i++) {
    assert.ok(await queue.claim(`w${i}`, ['t'], ['test.thing']));
    clock.ms += 1001; // the worker dies: its lease expires
  }
  assert.equal(await queue.claim('w4', ['t'], ['test.thing']), undefined, 'no attempts left');
  const sweeper = new Sweeper({ queue, kinds: [kind], rules: [], intervalMs: 1000, graceMs: 1000, retentionMs: 1000, log: pino({ level: 'silent' }) });
  await sweeper.sweepOnce();
  assert.equal(failures.length, 1);
  assert.deepEqual(failures[0]!.payload, { n: 7 });
  // The failed job says why its last attempt ended, not only that attempts ran out.
  const row = await queue.db.kysely.selectFrom('jobs').select(['state', 'last_error']).executeTakeFirstOrThrow();
  assert.equal(row.state, 'failed');
  assert.match(row.last_error!, /^BasaltError: Job test\.thing ran out of attempts: lease ran out; taken over by w2 at /);
  await sweeper.sweepOnce();
  assert.equal(failures.length, 1, 'failed once only');
});

test('a worker retries transient errors and fails permanent ones', async (t) => {
  const { db, queue, kind, failures, enqueue } = await setup(t);
  const real = new JobQueue(db, { now: () => Date.now() }, { maxAttempts: 3, leaseMs: 1000, retryDelayMs: 1 });
  void queue;
  let calls = 0;
  const worker = new Worker({
    queue: real, owner: 'W', targets: ['t'], concurrency: 2, pollMs: 20, log: pino({ level: 'silent' }),
    handlers: [{
      kind,
      async run(ctx, p) {
        calls++;
        if (p.n === 1 && ctx.job.attempts < 2) throw new BasaltError('BACKEND_UNAVAILABLE', 'busy', { retryable: true });
        if (p.n === 2) throw new BasaltError('DRIVER_FAILED', 'broken');
        await ctx.complete();
      },
    }],
  });
  worker.start();
  t.after(() => worker.stop());
  await enqueue(1);
  await enqueue(2);
  const deadline = Date.now() + 5000;
  let states: string[] = [];
  while (Date.now() < deadline) {
    states = (await db.kysely.selectFrom('jobs').select('state').orderBy('resource_id').execute()).map((r) => r.state);
    if (states.every((s) => s === 'done' || s === 'failed')) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.deepEqual(states, ['done', 'failed']);
  assert.equal(calls, 3, 'job 1 ran twice, job 2 once');
  assert.equal(failures.length, 1);
  assert.equal(failures[0]!.error.code, 'DRIVER_FAILED');
});

test('an outage of the database or coordination service defers a job without using up its attempts', async (t) => {
  const { db, kind, failures, enqueue } = await setup(t);
  const real = new JobQueue(db, { now: () => Date.now() }, { maxAttempts: 3, leaseMs: 1000, retryDelayMs: 1 });
  let calls = 0;
  const worker = new Worker({
    queue: real, owner: 'W', targets: ['t'], concurrency: 1, pollMs: 20, log: pino({ level: 'silent' }),
    handlers: [{
      kind,
      async run(ctx) {
        calls++;
        // Twice the job's attempts of outages, alternating the two services, then one transient error.
        if (calls <= 6) throw new BasaltError(calls % 2 ? 'COORDINATION_UNAVAILABLE' : 'DATABASE_UNAVAILABLE', 'away', { retryable: true });
        if (calls === 7) throw new BasaltError('BACKEND_UNAVAILABLE', 'busy', { retryable: true });
        await ctx.complete();
      },
    }],
  });
  worker.start();
  t.after(() => worker.stop());
  await enqueue(1);
  const deadline = Date.now() + 10_000;
  let row: { state: string; attempts: number; deferrals: number } | undefined;
  while (Date.now() < deadline) {
    row = await db.kysely.selectFrom('jobs').select(['state', 'attempts', 'deferrals']).executeTakeFirstOrThrow();
    if (row.state === 'done' || row.state === 'failed') break;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.deepEqual(row, { state: 'done', attempts: 2, deferrals: 6 }, 'six deferrals, then a retry and a success: two attempts used of three');
  assert.equal(failures.length, 0);
});

test('a retry and a job queued for later wake their worker when due, not at the next poll', async (t) => {
  const { db, kind } = await setup(t);
  const real = new JobQueue(db, { now: () => Date.now() }, { maxAttempts: 3, leaseMs: 1000, retryDelayMs: 100 });
  const done = new Map<number, () => void>();
  const ran = (n: number) => new Promise<void>((resolve) => { done.set(n, resolve); });
  const worker = new Worker({
    // A poll a minute apart: only the wake-ups can run these jobs within the test's bound.
    queue: real, owner: 'W', targets: ['t'], concurrency: 2, pollMs: 60_000, log: pino({ level: 'silent' }),
    handlers: [{
      kind,
      async run(ctx, p) {
        if (p.n === 1 && ctx.job.attempts < 2) throw new BasaltError('BACKEND_UNAVAILABLE', 'busy', { retryable: true });
        await ctx.complete();
        done.get(p.n)?.();
      },
    }],
  });
  worker.start();
  t.after(() => worker.stop());
  const bound = (what: string) => new Promise<never>((_, reject) => { setTimeout(() => reject(new Error(`${what} did not run within 5 s`)), 5000).unref(); });
  const retried = ran(1);
  await real.transaction((_tx, enq) => enq(kind, { target: 't', resourceId: 'r1', payload: { n: 1 } }));
  await Promise.race([retried, bound('the retry')]);
  const later = ran(2);
  const queuedAt = Date.now();
  await real.transaction((_tx, enq) => enq(kind, { target: 't', resourceId: 'r2', payload: { n: 2 }, notBefore: queuedAt + 200 }));
  await Promise.race([later, bound('the job queued for later')]);
  assert.ok(Date.now() - queuedAt >= 200, 'not before it was due');
});

test('issue 13 defect 10: a job waits while an earlier job of its resource whose kind holds later jobs (a fence) is unfinished', async (t) => {
  const { clock, queue, kind } = await setup(t);
  const fence: JobKind<P> = { ...kind, kind: 'test.fence', holdsLaterJobs: true };
  const add = (k: JobKind<P>, target: string, resourceId: string) => queue.transaction((_tx, enq) => enq(k, { target, resourceId, payload: { n: 0 } }));
  await add(fence, 'member-a', 'v1');
  await add(fence, 'member-b', 'v1');
  clock.ms += 1;
  await add(kind, 't', 'v1');
  await add(kind, 't', 'v2');
  const kinds = ['test.thing', 'test.fence'];
  const other = await queue.claim('W', ['t'], kinds, ['test.fence']);
  assert.equal(other?.resource_id, 'v2', 'another resource\'s job is not held');
  assert.equal(await queue.claim('W', ['t'], kinds, ['test.fence']), undefined, 'v1\'s job waits for its fences');
  const a = (await queue.claim('A', ['member-a'], kinds, ['test.fence']))!;
  const b = (await queue.claim('B', ['member-b'], kinds, ['test.fence']))!;
  assert.ok(a && b, 'fences do not wait for each other');
  await queue.transaction((tx) => queue.markDone(tx, a.id, 'A'));
  assert.ok(await queue.retryLater(b, 'B', 'again'));
  assert.equal(await queue.claim('W', ['t'], kinds, ['test.fence']), undefined, 'one fence still queued (a retry) holds it');
  clock.ms += 1000;
  const b2 = (await queue.claim('B', ['member-b'], kinds, ['test.fence']))!;
  await queue.transaction((tx) => queue.markDone(tx, b2.id, 'B'));
  assert.equal((await queue.claim('W', ['t'], kinds, ['test.fence']))?.resource_id, 'v1', 'claimable once every fence has finished');
});

test('issue 13 defect 10: a worker full of long jobs still runs a fence, and the job the fence held runs after it', { timeout: 20_000 }, async (t) => {
  const { db, kind } = await setup(t);
  const queue = new JobQueue(db, { now: () => Date.now() }, { maxAttempts: 3, leaseMs: 5000, retryDelayMs: 1 });
  const fence: JobKind<P> = { ...kind, kind: 'test.fence', holdsLaterJobs: true };
  const ran: string[] = [];
  let release!: () => void;
  const released = new Promise<void>((r) => { release = r; });
  let fenced!: () => void;
  const fenceDone = new Promise<void>((r) => { fenced = r; });
  let finished!: () => void;
  const allDone = new Promise<void>((r) => { finished = r; });
  // A slow poll: progress comes from wake-ups alone.
  const worker = new Worker({
    queue, owner: 'W', targets: ['t'], concurrency: 1, pollMs: 60_000, log: pino({ level: 'silent' }),
    handlers: [
      { kind, async run(ctx) { ran.push(ctx.job.resource_id); if (ctx.job.resource_id === 'long') await released; await ctx.complete(); if (ctx.job.resource_id === 'v1') finished(); } },
      { kind: fence, async run(ctx) { ran.push(`fence ${ctx.job.resource_id}`); await ctx.complete(); fenced(); } },
    ],
  });
  worker.start();
  t.after(() => worker.stop());
  const add = (k: JobKind<P>, resourceId: string) => queue.transaction((_tx, enq) => enq(k, { target: 't', resourceId, payload: { n: 0 } }));
  await add(kind, 'long');
  await add(fence, 'v1');
  await add(kind, 'v1');
  await fenceDone;
  assert.deepEqual(ran, ['long', 'fence v1'], 'the fence ran beside the long job; the job it held waits for a slot');
  release();
  await allDone;
  assert.deepEqual(ran, ['long', 'fence v1', 'v1']);
});

test('a worker claims only from targets woken since its last empty claim: a job nobody announced waits for the poll or a wake-up naming its target', async (t) => {
  const { db, kind } = await setup(t);
  const queue = new JobQueue(db, { now: () => Date.now() }, { maxAttempts: 3, leaseMs: 5000, retryDelayMs: 1 });
  // Another process's queue on the same database: its enqueues wake nobody here.
  const other = new JobQueue(db, { now: () => Date.now() }, { maxAttempts: 3, leaseMs: 5000, retryDelayMs: 1 });
  const ran: string[] = [];
  const waiters = new Map<string, () => void>();
  const ranJob = (id: string): Promise<void> => new Promise((r) => { if (ran.includes(id)) r(); else waiters.set(id, r); });
  const worker = new Worker({
    queue, owner: 'W', targets: ['a', 'b'], concurrency: 2, pollMs: 60_000, log: pino({ level: 'silent' }),
    handlers: [{ kind, async run(ctx) { ran.push(ctx.job.resource_id!); await ctx.complete(); waiters.get(ctx.job.resource_id!)?.(); } }],
  });
  const add = (q: JobQueue, target: string, resourceId: string) => q.transaction((_tx, enq) => enq(kind, { target, resourceId, payload: { n: 0 } }));
  await add(other, 'b', 'b-before'); // queued before the start: the start reads every target
  worker.start();
  t.after(() => worker.stop());
  await ranJob('b-before');
  await add(other, 'b', 'b-silent');
  await add(queue, 'a', 'a-woken');
  await ranJob('a-woken');
  // A second round on a: the worker has claimed from a until it was empty, slept, and been woken again.
  await add(queue, 'a', 'a-again');
  await ranJob('a-again');
  assert.deepEqual(ran, ['b-before', 'a-woken', 'a-again'], 'the wake-ups for a made the worker read a only: b\'s unannounced job waits');
  queue.wakeups.emit('wake', 'b'); // what another process's enqueue sends on PostgreSQL (LISTEN/NOTIFY)
  await ranJob('b-silent');
  assert.deepEqual(ran, ['b-before', 'a-woken', 'a-again', 'b-silent']);
});

test('claims take each target\'s queue oldest first, read from its head, and turn between targets', async (t) => {
  const { db, clock, queue, kind } = await setup(t);
  const enqueueFor = (target: string, n: number) => queue.transaction((_tx, enq) => enq(kind, { target, resourceId: `${target}${n}`, payload: { n } }));
  for (let n = 0; n < 5; n++) {
    await enqueueFor('a', n);
    await enqueueFor('b', n);
    clock.ms += 1;
  }
  const order: string[] = [];
  for (;;) {
    const job = await queue.claim('W', ['a', 'b'], ['test.thing']);
    if (!job) break;
    order.push(job.resource_id!);
  }
  assert.deepEqual(order, ['a0', 'b0', 'a1', 'b1', 'a2', 'b2', 'a3', 'b3', 'a4', 'b4'], 'oldest first within a target, the targets in turn');
  // The claim of a target's queue reads the `jobs_claim` index in order: no sort of the whole queue.
  const plan = await sql`explain query plan select id from jobs where target = ${'a'} and kind in (${'test.thing'}) and state = 'queued' and not_before <= ${clock.ms} order by not_before, created_at limit 1`.execute(db.kysely);
  const details = plan.rows.map((r) => (r as { detail: string }).detail).join('; ');
  assert.match(details, /USING INDEX jobs_claim/);
  assert.doesNotMatch(details, /TEMP B-TREE/, details);
});
