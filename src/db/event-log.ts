/**
 * Writing events (the `events` table). Every event row of Basalt goes through
 * {@link recordEvent}, in the transaction of the change it reports: the
 * status changes of the resource repositories and the events that are not
 * one status change (a backup's progress, a replicated volume falling
 * behind, a failover; `docs/events.md` lists them all). Its place in the
 * event stream (`event_stream`) is taken by the database (migration 0028):
 * on PostgreSQL at the commit, under a lock that orders places as commits.
 */
import { type Kysely, type Selectable, type Transaction } from 'kysely';
import { isoAt, newId } from '../common/index.ts';
import { prepared } from './prepared.ts';
import type { Database, EventsTable } from './schema.ts';

type Q = Kysely<Database> | Transaction<Database>;

/** Most characters of an event's detail (JSON): a detail is a few fields, never a payload. */
const DETAIL_MAX_CHARS = 4000;

/** One event to record. */
export interface EventRecord {
  projectId: string;
  /** `volume`, `snapshot`, `backup`, … */
  resourceType: string;
  resourceId: string;
  /** `<resource type>.<what>`, e.g. `volume.status`, `backup.progress`. */
  event: string;
  from?: string | null;
  to?: string | null;
  requestId?: string | null;
  /** What the event says beyond the statuses (a reason, progress, backends); absent: nothing. */
  detail?: Record<string, unknown> | null;
}

// Every status change writes both (prepared.ts).
const INSERT_EVENT = prepared<Selectable<EventsTable>>()((q, a) => q.insertInto('events').values({
  id: a('id'), project_id: a('project_id'), resource_type: a('resource_type'), resource_id: a('resource_id'), event: a('event'),
  from_status: a('from_status'), to_status: a('to_status'), request_id: a('request_id'), created_at: a('created_at'), detail: a('detail'),
}));

/**
 * Records an event; the database gives it its place in the event stream
 * (migration 0028): places are committed in their order, so a reader resuming
 * after one never skips a place committed later.
 */
export async function recordEvent(q: Q, nowMs: number, e: EventRecord): Promise<void> {
  const id = newId();
  const detail = e.detail ? JSON.stringify(e.detail) : null;
  if (detail !== null && detail.length > DETAIL_MAX_CHARS) throw new Error(`the detail of event ${e.event} is longer than ${DETAIL_MAX_CHARS} characters`);
  await INSERT_EVENT.run(q, {
    id, project_id: e.projectId, resource_type: e.resourceType, resource_id: e.resourceId, event: e.event,
    from_status: e.from ?? null, to_status: e.to ?? null, request_id: e.requestId ?? null, created_at: isoAt(nowMs), detail,
  });
}

/** An event row's detail as an object (null when it has none). */
export function eventDetail(row: { detail: string | null }): Record<string, unknown> | null {
  return row.detail === null ? null : JSON.parse(row.detail) as Record<string, unknown>;
}

/** An event as the event stream and webhooks send it: its place as `id`, the row's id as `event_id`, the detail as an object. */
export type SentEvent = Omit<Selectable<EventsTable>, 'id' | 'project_id' | 'detail'> & { id: number; event_id: string; detail: Record<string, unknown> | null };

/** The sent form of event row `row` at place `place`. */
export function sentEvent(place: number, row: Omit<Selectable<EventsTable>, 'project_id'>): SentEvent {
  return {
    id: place, event_id: row.id, resource_type: row.resource_type, resource_id: row.resource_id, event: row.event,
    from_status: row.from_status, to_status: row.to_status, request_id: row.request_id, created_at: row.created_at, detail: eventDetail(row),
  };
}
