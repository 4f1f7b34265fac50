/**
 * Steps a transaction takes last, just before its COMMIT.
 *
 * A row that every writer of a project changes (its quota usage) is locked,
 * on PostgreSQL, from the UPDATE that changes it until the commit. Changed in
 * the middle of a transaction, it stays locked across the statements after
 * it; each is a round trip to the server, long ones on a busy machine, and
 * every other create or delete of the project queues behind it (a chaos run
 * under load: writes waiting seconds in chains through that row). Taken last,
 * the lock is held for that one statement and the commit. SQLite runs one
 * transaction at a time: nothing changes there but the order.
 *
 * A transaction runs last steps when it was opened through
 * {@link withLastSteps} (`JobQueue.transaction` does); elsewhere a step runs
 * at once, where it is asked for.
 */
import type { Tx } from './schema.ts';

const steps = new WeakMap<Tx, Array<() => Promise<void>>>();

/** Runs `body` in `tx`, then every step {@link last} was given for `tx`, in order; returns `body`'s result. */
export async function withLastSteps<T>(tx: Tx, body: () => Promise<T>): Promise<T> {
  const mine: Array<() => Promise<void>> = [];
  steps.set(tx, mine);
  try {
    const result = await body();
    for (const step of mine) await step();
    return result;
  } finally {
    steps.delete(tx);
  }
}

/**
 * Runs `step` at the end of `tx` when `tx` runs last steps, else now. A step
 * that throws fails the transaction as any statement of it would.
 */
export async function last(tx: Tx, step: () => Promise<void>): Promise<void> {
  const mine = steps.get(tx);
  if (mine) mine.push(step);
  else await step();
}
