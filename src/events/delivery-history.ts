/**
 * The delivery history (`event_deliveries`): every attempt at delivering an
 * event outside Basalt, kept as long as user messages (`message_ttl`) and
 * counted by outcome for `/metrics`. Counting rows, rather than a counter in
 * one process's memory, lets the API of any process report deliveries that
 * the volume services of others made.
 */
import type { Clock } from '../common/index.ts';
import { isoAt } from '../common/index.ts';
import type { Db } from '../db/index.ts';

/** Deletes attempts older than `keepMs`; returns how many went. */
export async function pruneDeliveries(db: Db, clock: Clock, keepMs: number): Promise<number> {
  const r = await db.kysely.deleteFrom('event_deliveries').where('created_at', '<', isoAt(clock.now() - keepMs)).executeTakeFirst();
  return Number(r.numDeletedRows);
}

/** Attempts kept, by sink and outcome. */
export async function deliveryCounts(db: Db): Promise<Array<{ sink: string; outcome: string; count: number }>> {
  const rows = await db.kysely.selectFrom('event_deliveries')
    .select(['sink', 'outcome', (eb) => eb.fn.countAll<number>().as('n')]).groupBy(['sink', 'outcome']).execute();
  return rows.map((r) => ({ sink: r.sink, outcome: r.outcome, count: Number(r.n) }));
}
