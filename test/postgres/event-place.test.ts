/**
 * Event places on PostgreSQL (migration 0028): taken at the commit, so
 * recording an event takes no lock in the middle of a transaction. Before,
 * a transaction that recorded an event and then waited for a row (a snapshot
 * removal giving back quota) and one that held that row and then recorded an
 * event (a create) deadlocked, and PostgreSQL ended one of them. Places still
 * follow the commits' order, and release N-1's own insert of a place is
 * ignored.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { sql, type Kysely } from 'kysely';
import { migrateToLatest, openDatabase, type Database } from '../../src/db/index.ts';
import { recordEvent } from '../../src/db/event-log.ts';
import { startPostgres } from '../helpers/postgres.ts';

const postgres = await startPostgres();
after(() => postgres.stop());

const event = (id: string) => ({ projectId: 'p1', resourceType: 'volume', resourceId: id, event: 'volume.status', from: 'a', to: 'b' });
const places = async (k: Kysely<Database>) => (await k.selectFrom('event_stream as s').innerJoin('events as e', 'e.id', 's.event_id')
  .select(['s.seq', 'e.resource_id']).orderBy('s.seq').execute()).map((r) => r.resource_id);

test('two transactions that record events and wait for each other\'s row both commit; places follow the commits', async (t) => {
  const db = await openDatabase(await postgres.createDatabase());
  t.after(() => db.close());
  await migrateToLatest(db);
  const k = db.kysely;
  await k.insertInto('quota_usages').values({ project_id: 'p1', resource: 'volumes', in_use: 0, updated_at: '2026-12-06T00:00:00Z' }).execute();
  const bump = (q: Kysely<Database>) => q.updateTable('quota_usages').set((eb) => ({ in_use: eb('in_use', '+', 1) })).where('project_id', '=', 'p1').execute();
  let rowHeld!: () => void;
  const held = new Promise<void>((r) => { rowHeld = r; });
  let firstWaiting!: () => void;
  const waiting = new Promise<void>((r) => { firstWaiting = r; });
  // First: an event, then the row (as a snapshot removal). Second: the row, then an event (as a create).
  const first = k.transaction().execute(async (tx) => {
    await recordEvent(tx, Date.now(), event('first'));
    await held;
    const bumped = bump(tx);
    firstWaiting();
    await bumped;
  });
  const second = k.transaction().execute(async (tx) => {
    await bump(tx);
    rowHeld();
    await waiting;
    // The first one's update waits for this one's row lock before this records its event.
    while (Number((await sql<{ n: string }>`select count(*) as n from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()`.execute(k)).rows[0]!.n) === 0) {
      await new Promise((r) => setTimeout(r, 10));
    }
    await recordEvent(tx, Date.now(), event('second'));
  });
  await Promise.all([first, second]);
  assert.equal((await k.selectFrom('quota_usages').select('in_use').executeTakeFirstOrThrow()).in_use, 2);
  assert.deepEqual(await places(k), ['second', 'first'], 'the second committed first: its place comes first');
});

test('a place release N-1 inserts itself in the transaction is the only one', async (t) => {
  const db = await openDatabase(await postgres.createDatabase());
  t.after(() => db.close());
  await migrateToLatest(db);
  const k = db.kysely;
  await k.transaction().execute(async (tx) => {
    await recordEvent(tx, Date.now(), event('old'));
    const { id } = await tx.selectFrom('events').select('id').executeTakeFirstOrThrow();
    // What release N-1 did after inserting an event.
    await sql`select pg_advisory_xact_lock(${0x42534c54})`.execute(tx);
    await tx.insertInto('event_stream').values({ event_id: id, project_id: 'p1' }).execute();
  });
  await recordEvent(k, Date.now(), event('new'));
  assert.deepEqual(await places(k), ['old', 'new']);
});
