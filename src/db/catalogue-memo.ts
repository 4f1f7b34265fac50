/**
 * The catalogue's hot reads, kept per process. Every create reads what an
 * admin changes a few times a year: the project's default type, the type with
 * its extra specs, the quota limits of the `default` class and of the
 * project. Five statements out of the thirteen a create runs, each one a trip
 * through the driver and the database's lock.
 *
 * The database says when they are stale: migration 0027's triggers give
 * `catalogue_generation.token` a fresh random value in the same transaction
 * as any change to `volume_types`, `volume_type_extra_specs`,
 * `volume_type_projects`, `default_volume_types`, `quotas` or
 * `quota_classes`, by any process. A read gives the token (once per
 * transaction), and the memo serves what it loaded under that token; another
 * token empties it.
 *
 * Why that is exact:
 * - What is loaded is read after the token, in the same transaction, so it is
 *   never older than the token it is kept under (under PostgreSQL's READ
 *   COMMITTED it may be newer: a change committed in between, as the same
 *   reads without the memo would have seen).
 * - A token is random, never a counter: a transaction that changed the
 *   catalogue and then rolled back (or a commit batch that failed) leaves a
 *   token nobody will see again, so what was loaded under it is never served.
 * - A transaction that reads the token and then changes the catalogue itself
 *   calls {@link CatalogueMemo.changed}, so its next read looks again (every
 *   write method of the repositories that use the memo does).
 *
 * Not kept: anything a create must read under a lock (a type's encryption is
 * read after `lockType`, see type-encryption-repository.ts).
 */
import type { Kysely } from 'kysely';
import type { Database } from './schema.ts';
import { prepared } from './prepared.ts';

type Q = Kysely<Database>;

const TOKEN = prepared<Record<string, never>>()((q) => q.selectFrom('catalogue_generation').select('token').where('id', '=', 1));

/** Entries kept at most; past it the memo starts again empty (a deployment with that many projects creating at once). */
const MAX_ENTRIES = 10_000;

/** Reads of the catalogue, kept while the database's catalogue token stays the same. */
export class CatalogueMemo {
  /** The token the entries were loaded under. */
  #token: string | undefined;
  readonly #entries = new Map<string, unknown>();
  /** The token as one transaction read it, by its transaction object. */
  readonly #tokens = new WeakMap<Q, Promise<string>>();

  /**
   * What `load` gives, as kept under `key` for the token `q` sees; loaded
   * (through `q`) and kept when there is none. The value is frozen: shared by
   * every caller, it must not change.
   */
  async read<T>(q: Q, key: string, load: () => Promise<T>): Promise<T> {
    const token = await this.#tokenOf(q);
    if (token !== this.#token) {
      this.#entries.clear();
      this.#token = token;
    }
    if (this.#entries.has(key)) return this.#entries.get(key) as T;
    const value = freeze(await load());
    // Another transaction may have moved the memo to another token meanwhile: then this value is not kept.
    if (this.#token === token) {
      if (this.#entries.size >= MAX_ENTRIES) this.#entries.clear();
      this.#entries.set(key, value);
    }
    return value;
  }

  /** `q` changed the catalogue: its next read looks at the token again. */
  changed(q: Q): void {
    this.#tokens.delete(q);
  }

  #tokenOf(q: Q): Promise<string> {
    // Outside a transaction every read is its own: look each time.
    if (!q.isTransaction) return readToken(q);
    let token = this.#tokens.get(q);
    if (!token) {
      token = readToken(q);
      this.#tokens.set(q, token);
    }
    return token;
  }
}

async function readToken(q: Q): Promise<string> {
  const row = await TOKEN.first(q, {});
  if (!row) throw new Error('catalogue_generation has no row: the database was not migrated');
  return row.token;
}

/** Freezes `value` and the plain objects and arrays in it. */
function freeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) freeze(v);
  }
  return value;
}
