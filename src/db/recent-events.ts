/**
 * The newest status events (the `events` table), for the dashboard's live
 * list. A read only: events are written by the repositories that change a
 * status, in the same transaction.
 */
import type { Kysely, Selectable } from 'kysely';
import type { Database, EventsTable } from './schema.ts';
import type { ProjectScope } from './resource-repository.ts';

/** One row of `events`. */
export type EventRow = Selectable<EventsTable>;

/** What {@link recentEvents} returns. */
export interface RecentEventsQuery {
  scope: ProjectScope;
  /** Only events created at or after this instant (ISO-8601), for a poller that has the ones before (it drops those it has by id: several may share a millisecond). */
  afterIso?: string;
  /** Most rows returned. */
  limit: number;
}

/**
 * The newest events in scope, newest first (ties by id, so pages are stable).
 * No index leads with `created_at`: on a large table this reads it whole, which
 * a dashboard polling every few seconds can afford on the embedded deployment.
 * TODO(issue 18): an index on (project_id, created_at) if a large deployment shows the scan.
 */
export async function recentEvents(q: Kysely<Database>, o: RecentEventsQuery): Promise<EventRow[]> {
  let query = q.selectFrom('events').selectAll();
  if (o.scope !== 'all') query = query.where('project_id', '=', o.scope.projectId);
  if (o.afterIso !== undefined) query = query.where('created_at', '>=', o.afterIso);
  return query.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(o.limit).execute();
}
