/** Named locks on every backend: exclusion, timeouts, release, and a dead holder's lock freed. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import pg from 'pg';
import { openCoordinator, withLock, type Coordinator } from '../../../src/coordination/index.ts';
import { withLocks } from '../../../src/volume/group-handlers.ts';
import { startEtcd } from '../../helpers/etcd.ts';
import { startPgProxy } from '../../helpers/pg-proxy.ts';
import { startPostgres } from '../../helpers/postgres.ts';

async function exclusion(t: TestContext, a: Coordinator, b: Coordinator): Promise<void> {
  const held = await a.lock('volume-1', 1000);
  await assert.rejects(b.lock('volume-1', 100), (e: { code: string; retryable: boolean }) => e.code === 'BACKEND_UNAVAILABLE' && e.retryable);
  const other = await b.lock('volume-2', 100);
  await other.release();
  const waiting = b.lock('volume-1', 2000);
  await new Promise((r) => setTimeout(r, 50));
  await held.release();
  await held.release(); // idempotent
  const got = await waiting;
  await got.release();
  const order: string[] = [];
  await Promise.all([1, 2, 3].map((i) => withLock(i % 2 ? a : b, 'volume-3', 5000, async () => {
    order.push(`in${i}`);
    await new Promise((r) => setTimeout(r, 20));
    order.push(`out${i}`);
  })));
  for (let i = 0; i < order.length; i += 2) assert.equal(order[i]!.slice(2), order[i + 1]!.slice(3), `critical sections do not overlap: ${order}`);
  await assert.rejects(a.lock('../etc/passwd', 10), /Invalid lock name/);
  // Many waiters on one name (for files: each release removing the file others wait on): one holder at a time.
  let inside = 0;
  let most = 0;
  await Promise.all(Array.from({ length: 20 }, (_, i) => (async () => {
    for (let k = 0; k < 5; k++) {
      await withLock(i % 2 ? a : b, 'volume-5', 10_000, async () => {
        most = Math.max(most, ++inside);
        await new Promise((r) => setTimeout(r, Math.random() * 3));
        inside--;
      });
    }
  })()));
  assert.equal(most, 1, 'never two holders at once');
  void t;
}

test('file:// locks exclude each other across coordinators', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-locks-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const a = openCoordinator(`file://${dir}`);
  const b = openCoordinator(`file://${dir}`);
  await exclusion(t, a, b);
  // Bounded: a released lock leaves nothing in the folder (it once kept a file per name, forever).
  for (let i = 0; i < 20; i++) await (await a.lock(`volume-${i}`, 1000)).release();
  assert.deepEqual(fs.readdirSync(dir), [], 'the folder holds only the locks held now');
});

test('a file:// lock whose folder is removed under it stays held and releases quietly; the next lock makes the folder again', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-locks-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const c = openCoordinator(`file://${dir}`);
  const held = await c.lock('volume-1', 1000);
  fs.rmSync(dir, { recursive: true, force: true });
  await held.release();
  await (await c.lock('volume-1', 1000)).release();
  assert.deepEqual(fs.readdirSync(dir), []);
});

test('a killed holder\'s file:// lock is free at once (the kernel drops it; no staleness to wait out)', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-locks-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const url = `file://${dir}`;
  const holder = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, '../../helpers/lock-holder.ts'), url, 'volume-7'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((r) => holder.stdout!.once('data', r));
  const b = openCoordinator(url);
  await assert.rejects(b.lock('volume-7', 100), /stayed held/);
  const exited = new Promise((r) => holder.once('exit', r));
  holder.kill('SIGKILL');
  await exited;
  // A stale lock directory waited 10 s; the kernel dropped this one with its holder.
  const freed = await b.lock('volume-7', 1000);
  await freed.release();
  // A dead holder's file stays until its name is locked again, or until a coordinator opens the folder.
  const held = await b.lock('volume-8', 1000);
  fs.writeFileSync(path.join(dir, 'volume-9.lock'), '');
  openCoordinator(url);
  assert.deepEqual(fs.readdirSync(dir), ['volume-8.lock'], 'the unheld file went, the held one stayed');
  await held.release();
});

test('a lock directory of the previous release holds its name while refreshed, and goes once unrefreshed for 10 s', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-locks-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const c = openCoordinator(`file://${dir}`);
  const old = path.join(dir, 'volume-4.lock');
  fs.mkdirSync(old);
  await assert.rejects(c.lock('volume-4', 100), /stayed held/);
  const past = new Date(Date.now() - 11_000);
  fs.utimesSync(old, past, past);
  const got = await c.lock('volume-4', 1000);
  assert.ok(fs.statSync(old).isFile(), 'the name is a lock file now');
  await got.release();
});

/** Two coordinators on one new PostgreSQL database, closed (and the server stopped) after the test. */
async function twoOnPostgres(t: TestContext): Promise<{ url: string; a: Coordinator; b: Coordinator }> {
  const server = await startPostgres();
  t.after(() => server.stop());
  const url = await server.createDatabase();
  const a = openCoordinator(url);
  const b = openCoordinator(url);
  t.after(async () => { await a.close(); await b.close(); });
  return { url, a, b };
}

test('postgresql:// advisory locks exclude each other, and a dead holder\'s lock is freed', async (t) => {
  const { url, a, b } = await twoOnPostgres(t);
  await exclusion(t, a, b);
  // A holder whose session dies (its process was killed) loses the lock.
  const holder = new pg.Client({ connectionString: url });
  holder.on('error', () => undefined);
  await holder.connect();
  await holder.query(`select pg_advisory_lock(hashtext('volume-9'))`);
  await assert.rejects(b.lock('volume-9', 100));
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`select pg_terminate_backend(pid) from pg_stat_activity where pid <> pg_backend_pid() and query like '%volume-9%' and query like '%pg_advisory_lock%'`);
  await admin.end();
  const freed = await b.lock('volume-9', 2000);
  await freed.release();
  assert.throws(() => openCoordinator('redis://x'), /Unsupported \[coordination\] backend_url/);
});

test('etcd3+http:// locks exclude each other; a dead holder\'s lock expires with its lease, or at once when its successor frees it', async (t) => {
  const etcd = await startEtcd();
  t.after(() => etcd.stop());
  const url = `etcd3+${etcd.url}?ttl=2`;
  const a = openCoordinator(url);
  const b = openCoordinator(url);
  t.after(async () => { await b.close(); });
  await exclusion(t, a, b);
  // A waiter reads until the key is free: it adds next to nothing to etcd's log (the etcd3 client's
  // Lock made three synced writes an attempt, every 25 ms: about a hundred in this second).
  const proposals = async (): Promise<number> => Number(/^etcd_server_proposals_committed_total (\S+)$/m.exec(await (await fetch(`${etcd.url}/metrics`)).text())![1]);
  const held = await a.lock('volume-8', 1000);
  const before = await proposals();
  await assert.rejects(b.lock('volume-8', 1000), /stayed held/);
  const written = (await proposals()) - before;
  assert.ok(written <= 5, `a waiter of 1 s made ${written} writes to etcd's log`);
  await held.release();
  await a.close();
  // A holder process killed without releasing: its lease is no longer renewed and expires.
  const holder = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, '../../helpers/lock-holder.ts'), url, 'volume-7'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((r) => holder.stdout!.once('data', r));
  await assert.rejects(b.lock('volume-7', 100));
  holder.kill('SIGKILL');
  const freed = await b.lock('volume-7', 10_000);
  await freed.release();
  // Its successor frees at once what a dead incarnation holds, and nothing another holds.
  const dead = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, '../../helpers/lock-holder.ts'), `etcd3+${etcd.url}?ttl=30`, 'volume-6', 'incarnation-1'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((r) => dead.stdout!.once('data', r));
  const exited = new Promise((r) => dead.once('exit', r));
  dead.kill('SIGKILL');
  await exited;
  const other = await b.lock('volume-5', 1000);
  await assert.rejects(b.lock('volume-6', 100), /stayed held/, 'its lease has 30 s to run');
  assert.equal(await b.releaseLocksOf('incarnation-1'), 1);
  await (await b.lock('volume-6', 1000)).release();
  assert.equal(await b.releaseLocksOf(''), 0);
  const c = openCoordinator(url);
  await assert.rejects(c.lock('volume-5', 100), /stayed held/, 'a lock of another incarnation stays');
  await c.close();
  await other.release();
});

/** Resolves once `signal` is aborted; rejects after `ms`. */
function abortedWithin(signal: AbortSignal, ms: number): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`not aborted within ${ms} ms`)), ms);
    signal.addEventListener('abort', () => { clearTimeout(t); resolve(signal.reason); }, { once: true });
  });
}

test('a lock whose PostgreSQL session ends is lost: its holder learns it, and withLock does not take the result', async (t) => {
  const { url, a, b } = await twoOnPostgres(t);
  const kill = async (): Promise<void> => {
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await admin.query(`select pg_terminate_backend(pid) from pg_locks where locktype = 'advisory' and pid <> pg_backend_pid()`);
    await admin.end();
  };
  const held = await a.lock('volume-11', 1000);
  assert.equal(held.lost.aborted, false);
  await kill();
  assert.match(String(await abortedWithin(held.lost, 10_000)), /PostgreSQL session ended/);
  await (await b.lock('volume-11', 10_000)).release();
  await held.release(); // quietly: the session is gone
  // Lost while its function ran: the function's result is not taken.
  await assert.rejects(withLock(a, 'volume-12', 1000, async () => {
    await kill();
    // Until the database has ended the session: another takes the lock then (a status, not a guessed time).
    await (await b.lock('volume-12', 10_000)).release();
    return 'done';
  }), (e: { code: string; retryable: boolean; message: string }) => e.code === 'COORDINATION_UNAVAILABLE' && e.retryable && /Lock volume-12 was lost/.test(e.message));
  assert.equal(await withLock(a, 'volume-12', 1000, async () => 'done'), 'done', 'a lock kept to the end gives its result');
  // The step is told (a copy stops at its next chunk): what it then throws is the cause, the loss the error.
  const lostOne = (e: { code: string; retryable: boolean; cause?: unknown }): boolean => e.code === 'COORDINATION_UNAVAILABLE' && e.retryable && /PostgreSQL session ended/.test(String((e.cause as Error | undefined)?.message));
  const stopsWhenLost = async (lost: AbortSignal): Promise<string> => {
    assert.equal(lost.aborted, false);
    await kill();
    await abortedWithin(lost, 10_000);
    lost.throwIfAborted();
    return 'done';
  };
  await assert.rejects(withLock(a, 'volume-13', 1000, stopsWhenLost), lostOne);
  // Of several locks held together, losing any tells the step.
  await assert.rejects(withLocks({ coordinator: a, lockTimeoutMs: 1000 }, ['volume-15', 'volume-14'], stopsWhenLost), lostOne);
  assert.equal(await withLocks({ coordinator: a, lockTimeoutMs: 1000 }, ['volume-15', 'volume-14'], async (lost) => (lost.aborted ? 'lost' : 'held')), 'held');
});

test('a PostgreSQL lock asked for while the database is cut off fails as out of reach instead of waiting', { timeout: 60_000 }, async (t) => {
  const server = await startPostgres();
  t.after(() => server.stop());
  const relay = await startPgProxy(Number(new URL(server.url).port));
  t.after(() => relay.close());
  const a = openCoordinator(relay.url(await server.createDatabase()));
  t.after(async () => { relay.heal(); await a.close(); });
  await (await a.lock('volume-15', 1000)).release(); // a pooled session to the database, idle
  relay.partition();
  const asked = Date.now();
  await assert.rejects(a.lock('volume-15', 1000), (e: { code: string; retryable: boolean }) => e.code === 'DATABASE_UNAVAILABLE' && e.retryable);
  assert.ok(Date.now() - asked < 30_000, `failed after ${Date.now() - asked} ms`);
  relay.heal();
  await (await a.lock('volume-15', 5000)).release();
});

test('an etcd lock cut off from etcd is lost before etcd lets another take it', { timeout: 60_000 }, async (t) => {
  const etcd = await startEtcd();
  t.after(() => etcd.stop());
  const relay = await startPgProxy(Number(new URL(etcd.url).port));
  t.after(() => relay.close());
  const a = openCoordinator(`etcd3+http://127.0.0.1:${relay.port}?ttl=2`);
  const b = openCoordinator(`etcd3+${etcd.url}?ttl=2`);
  t.after(async () => { relay.heal(); await a.close(); await b.close(); });
  const held = await a.lock('volume-13', 1000);
  // Renewals go on while it is reachable: another waiting for it through several ttls does not get it.
  await assert.rejects(b.lock('volume-13', 5000), /stayed held/);
  assert.equal(held.lost.aborted, false, 'renewed, not lost');
  relay.partition();
  const cut = Date.now();
  let lostAt = 0;
  void abortedWithin(held.lost, 30_000).then(() => { lostAt = Date.now(); }, () => undefined);
  const other = await b.lock('volume-13', 30_000);
  const takenAt = Date.now();
  assert.ok(lostAt > 0 && lostAt <= takenAt, `lost ${lostAt - cut} ms after the cut, taken by another ${takenAt - cut} ms after it`);
  assert.match(String(held.lost.reason), /etcd lease was not renewed/);
  await other.release();
  // A lock asked for while cut off fails as etcd out of reach, within the calls' deadline (it waited for ever).
  const asked = Date.now();
  await assert.rejects(a.lock('volume-14', 1000), (e: { code: string; retryable: boolean }) => e.code === 'COORDINATION_UNAVAILABLE' && e.retryable);
  assert.ok(Date.now() - asked < 30_000, `failed after ${Date.now() - asked} ms (the client tries each call three times)`);
  relay.heal();
  await held.release();
});
