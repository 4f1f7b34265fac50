/**
 * 0027: a token that tells each process when what it keeps of the catalogue
 * is stale (src/db/catalogue-memo.ts). `catalogue_generation` holds one row;
 * triggers give its token a new random value in the transaction of any
 * change to volume types, their extra specs and project access, the
 * projects' default types, and quota limits (of projects and classes).
 * Random rather than counted: a change rolled back must not leave a token
 * that a later change could give again.
 * Released: never edit; add a new numbered migration instead.
 */
import { sql, type Kysely } from 'kysely';

/** The tables whose changes move the token. */
const TABLES = ['volume_types', 'volume_type_extra_specs', 'volume_type_projects', 'default_volume_types', 'quotas', 'quota_classes'] as const;

export async function up(db: Kysely<unknown>): Promise<void> {
  // SQLite has no version(): it answers with an error.
  const postgres = await sql`select version()`.execute(db).then(() => true, () => false);
  await db.schema.createTable('catalogue_generation')
    .addColumn('id', 'integer', (c) => c.primaryKey().check(sql`id = 1`))
    .addColumn('token', 'varchar(36)', (c) => c.notNull())
    .execute();
  if (postgres) {
    await sql`insert into catalogue_generation (id, token) values (1, gen_random_uuid()::text)`.execute(db);
    await sql.raw(`create function basalt_catalogue_changed() returns trigger language plpgsql as $$
      begin
        update catalogue_generation set token = gen_random_uuid()::text where id = 1;
        return null;
      end $$`).execute(db);
    for (const t of TABLES) {
      await sql.raw(`create trigger ${t}_catalogue after insert or update or delete or truncate on ${t}
        for each statement execute function basalt_catalogue_changed()`).execute(db);
    }
    return;
  }
  const fresh = 'lower(hex(randomblob(16)))';
  await sql.raw(`insert into catalogue_generation (id, token) values (1, ${fresh})`).execute(db);
  for (const t of TABLES) {
    for (const event of ['insert', 'update', 'delete']) {
      await sql.raw(`create trigger ${t}_catalogue_${event} after ${event} on ${t} begin
          update catalogue_generation set token = ${fresh} where id = 1;
        end`).execute(db);
    }
  }
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
