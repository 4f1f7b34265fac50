/**
 * Queries built once. Kysely builds an immutable tree and compiles it to SQL
 * on every call: about 20 µs for a one-line select here, more than SQLite
 * takes to run it, and a create request runs about fifteen. A prepared query
 * is built once, with a marker where each argument goes, and compiled once per
 * database (per dialect: `?` or `$1`); a call only fills in the parameters.
 * Only for queries whose shape never changes with their arguments: no `in`
 * lists, no optional clauses. A query of many shapes (a table chosen at run
 * time, a list of some length) is a family: {@link preparedShapes} keeps one
 * prepared query per shape.
 */
import type { Compilable, CompiledQuery, Kysely, QueryResult } from 'kysely';
import type { Database } from './schema.ts';

type Q = Kysely<Database>;

/** Where an argument goes: a parameter value Kysely passes through untouched. */
class Slot {
  constructor(readonly name: string) {}
}

/** A query built once, then run with different arguments. */
export interface Prepared<A, R> {
  /** Every row. */
  all(q: Q, args: A): Promise<R[]>;
  /** The first row, or undefined. */
  first(q: Q, args: A): Promise<R | undefined>;
  /** The whole result (affected rows of a write). */
  run(q: Q, args: A): Promise<QueryResult<R>>;
}

/**
 * Prepares the query `build` makes, taking arguments `A`:
 * `prepared<{ id: string }>()((q, a) => q.selectFrom('t').selectAll().where('id', '=', a('id')))`.
 * `a(name)` stands for `args[name]` of each call (an `undefined` argument is
 * passed as NULL); the row type is the query's own.
 */
export function prepared<A extends Record<string, unknown>>() {
  return <R>(build: Builder<A, R>): Prepared<A, R> => prepare(build);
}

function prepare<A extends Record<string, unknown>, R>(build: Builder<A, R>): Prepared<A, R> {
  // Per database: the executor's adapter is one object per Kysely instance and its transactions.
  const compiled = new WeakMap<object, { query: CompiledQuery<R>; slots: (string | undefined)[] }>();
  const arg = <K extends keyof A & string>(name: K): A[K] => new Slot(name) as unknown as A[K];
  const compiledFor = (q: Q) => {
    const key = q.getExecutor().adapter;
    let c = compiled.get(key);
    if (!c) {
      const query = build(q, arg).compile();
      c = { query, slots: query.parameters.map((p) => (p instanceof Slot ? p.name : undefined)) };
      compiled.set(key, c);
    }
    return c;
  };
  const run = (q: Q, args: A): Promise<QueryResult<R>> => {
    const { query, slots } = compiledFor(q);
    const parameters = query.parameters.map((p, i) => {
      const name = slots[i];
      return name === undefined ? p : (args[name] ?? null);
    });
    return q.executeQuery<R>({ ...query, parameters });
  };
  return {
    run,
    all: async (q, args) => (await run(q, args)).rows,
    first: async (q, args) => (await run(q, args)).rows[0],
  };
}

/** What builds a prepared query: `arg(name)` stands for an argument. */
export type Builder<A, R> = (q: Q, arg: <K extends keyof A & string>(name: K) => A[K]) => Compilable<R>;

/**
 * A family of prepared queries, one per shape: `shape(key, build)` returns the
 * query prepared for `key`, preparing `build` the first time. The key must
 * name everything `build` depends on besides the arguments.
 */
export function preparedShapes<A extends Record<string, unknown>, R>(): (key: string, build: Builder<A, R>) => Prepared<A, R> {
  const shapes = new Map<string, Prepared<A, R>>();
  return (key, build) => {
    let query = shapes.get(key);
    if (!query) shapes.set(key, (query = prepare(build)));
    return query;
  };
}
