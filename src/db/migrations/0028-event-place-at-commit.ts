/**
 * 0028: an event's place in the event stream is taken by the database, not
 * by the code that records the event.
 *
 * PostgreSQL: places must be committed in their order, so a transaction took
 * a global advisory lock before taking its place and held it to its commit.
 * Taken in the middle of a transaction, after other row locks, it closed
 * deadlock cycles: a create holding its project's quota row waited for the
 * lock, held by a snapshot removal waiting for the same quota row. Now a
 * deferred constraint trigger takes lock and place at COMMIT, after every
 * other statement of the transaction: a transaction holding the lock waits
 * for nothing else, so the lock can be in no cycle.
 *
 * SQLite (one writer at a time, no lock needed): a trigger inserts the place
 * in the statement that inserts the event, one statement fewer per event.
 *
 * Release N-1 still inserts places itself: the place is inserted only when the
 * event has none yet (PostgreSQL: looked up at commit; SQLite: a second
 * place is ignored), through a unique index on `event_stream.event_id`.
 * Released: never edit; add a new numbered migration instead.
 */
import { sql, type Kysely } from 'kysely';

/** The advisory lock key of the event stream's places ('BSLT'), as release N-1 takes it. */
const EVENT_STREAM_LOCK = 0x42534c54;

export async function up(db: Kysely<unknown>): Promise<void> {
  // SQLite has no version(): it answers with an error.
  const postgres = await sql`select version()`.execute(db).then(() => true, () => false);
  await db.schema.createIndex('event_stream_event').unique().on('event_stream').column('event_id').execute();
  if (postgres) {
    await sql.raw(`create function basalt_event_place() returns trigger language plpgsql as $$
      begin
        perform pg_advisory_xact_lock(${EVENT_STREAM_LOCK});
        insert into event_stream (event_id, project_id) values (new.id, new.project_id) on conflict (event_id) do nothing;
        return null;
      end $$`).execute(db);
    await sql.raw(`create constraint trigger events_place after insert on events
      deferrable initially deferred for each row execute function basalt_event_place()`).execute(db);
    return;
  }
  await sql.raw(`create trigger events_place after insert on events begin
      insert or ignore into event_stream (event_id, project_id) values (new.id, new.project_id);
    end`).execute(db);
  // Release N-1's own insert of a place the trigger took already: ignored, not an error.
  await sql.raw(`create trigger event_stream_once before insert on event_stream
      when exists (select 1 from event_stream where event_id = new.event_id) begin
      select raise(ignore);
    end`).execute(db);
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
