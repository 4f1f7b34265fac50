/**
 * 0026: what each pool holds, kept by the database itself. Every placement,
 * extend and migration checks a pool's capacity against the sizes of its
 * volumes (`provisionedGiB`), inside its transaction; summing them (even from
 * the covering index of 0014) grew with the deployment: 20 µs at 1,000
 * volumes, 170 µs at 6,000, held under the write lock on SQLite. `pool_usage`
 * keeps the sum per `host` (`host@backend#pool`), changed by triggers on
 * `volumes` in the same transaction as the row, so it is exact at every
 * commit and read as one row.
 * Released: never edit; add a new numbered migration instead.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  // SQLite has no version(): it answers with an error.
  const postgres = await sql`select version()`.execute(db).then(() => true, () => false);
  await db.schema.createTable('pool_usage')
    .addColumn('host', 'varchar(255)', (c) => c.primaryKey())
    .addColumn('gigabytes', 'bigint', (c) => c.notNull().defaultTo(0))
    .execute();
  // Writers of volumes wait from the count until the triggers exist (the migration is one transaction):
  // a placement committed between the two would be missing from the sums for good. (SQLite: the
  // migration's transaction holds the write lock already.)
  if (postgres) await sql`lock table volumes in share row exclusive mode`.execute(db);
  await sql`insert into pool_usage (host, gigabytes) select host, sum(size) from volumes where host is not null group by host`.execute(db);
  if (postgres) {
    await sql.raw(`create function basalt_pool_usage() returns trigger language plpgsql as $$
      begin
        if tg_op <> 'INSERT' and old.host is not null then
          update pool_usage set gigabytes = gigabytes - old.size where host = old.host;
        end if;
        if tg_op <> 'DELETE' and new.host is not null then
          insert into pool_usage (host, gigabytes) values (new.host, new.size)
            on conflict (host) do update set gigabytes = pool_usage.gigabytes + excluded.gigabytes;
        end if;
        return null;
      end $$`).execute(db);
    await sql.raw('create trigger pool_usage_insert after insert on volumes for each row when (new.host is not null) execute function basalt_pool_usage()').execute(db);
    await sql.raw('create trigger pool_usage_delete after delete on volumes for each row when (old.host is not null) execute function basalt_pool_usage()').execute(db);
    await sql.raw(`create trigger pool_usage_update after update of host, size on volumes for each row
      when (old.host is distinct from new.host or old.size is distinct from new.size) execute function basalt_pool_usage()`).execute(db);
    return;
  }
  await sql.raw(`create trigger pool_usage_insert after insert on volumes when new.host is not null begin
      insert into pool_usage (host, gigabytes) values (new.host, new.size) on conflict (host) do update set gigabytes = gigabytes + excluded.gigabytes;
    end`).execute(db);
  await sql.raw(`create trigger pool_usage_delete after delete on volumes when old.host is not null begin
      update pool_usage set gigabytes = gigabytes - old.size where host = old.host;
    end`).execute(db);
  await sql.raw(`create trigger pool_usage_update after update of host, size on volumes
      when old.host is not new.host or old.size is not new.size begin
      update pool_usage set gigabytes = gigabytes - old.size where host = old.host;
      insert into pool_usage (host, gigabytes) select new.host, new.size where new.host is not null
        on conflict (host) do update set gigabytes = gigabytes + excluded.gigabytes;
    end`).execute(db);
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
