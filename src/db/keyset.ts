/**
 * Keyset pagination shared by every list: ordering by several keys, each with
 * its own direction, with the id as the last tie-breaker, and the condition
 * "comes after the marker row" in that same order.
 *
 * Nullable text columns are compared as `coalesce(column, '')`, in the order
 * and in the marker condition alike: a plain `name > NULL` is never true, so
 * rows with empty keys would otherwise drop out of later pages.
 */
import { sql, type Expression, type SqlBool } from 'kysely';

/** One sort key over a table column. */
export interface KeysetKey<C extends string> { column: C; dir: 'asc' | 'desc' }

/** How to page over one table. */
export interface KeysetTable<C extends string> {
  /** Table name (or alias) used to qualify columns. */
  table: string;
  /** Text columns that may hold NULL. */
  nullable: ReadonlySet<C>;
}

/** The keys to order by: `sort`, plus `id` as the final tie-breaker. */
export function keysetKeys<C extends string>(sort: readonly KeysetKey<C>[]): KeysetKey<C | 'id'>[] {
  if (sort.some((k) => k.column === 'id')) return [...sort];
  return [...sort, { column: 'id', dir: sort[sort.length - 1]?.dir ?? 'desc' }];
}

/** The expression a key orders and compares by. */
export function keysetExpression<C extends string>(t: KeysetTable<C>, column: C | 'id'): Expression<unknown> {
  const ref = sql.ref(`${t.table}.${column}`);
  return t.nullable.has(column as C) ? sql`coalesce(${ref}, '')` : ref;
}

/**
 * `(k1 > m1) OR (k1 = m1 AND k2 > m2) OR …`, with `<` for descending keys:
 * the rows that come after `marker` in the order of `keys`.
 */
export function afterMarker<C extends string>(
  t: KeysetTable<C>, keys: readonly KeysetKey<C | 'id'>[], marker: Record<string, unknown>,
): Expression<SqlBool> {
  const value = (c: C | 'id') => {
    const v = marker[c];
    return t.nullable.has(c as C) ? (v ?? '') : v;
  };
  const branches = keys.map((k, i) => {
    const equal = keys.slice(0, i).map((p) => sql`${keysetExpression(t, p.column)} = ${value(p.column)}`);
    const beyond = sql`${keysetExpression(t, k.column)} ${sql.raw(k.dir === 'asc' ? '>' : '<')} ${value(k.column)}`;
    return sql.join([...equal, beyond], sql` and `);
  });
  return sql<SqlBool>`(${sql.join(branches.map((b) => sql`(${b})`), sql` or `)})`;
}
