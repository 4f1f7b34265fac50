/**
 * Writing events (the `events` table) and their places in the event stream
 * (`event_stream`). Every event row of Basalt goes through
 * {@link recordEvent}, in the transaction of the change it reports: the
 * status changes of the resource repositories and the events that are not
 * one status change (a backup's progress, a replicated volume falling
 * behind, a failover; `docs/events.md` lists them all).
 */
import { PostgresAdapter, sql, type Kysely, type Selectable, type Transaction } from 'kysely';
import { isoAt, newId } from '../common/index.ts';
import { prepared } from './prepared.ts';
import type { Database, EventsTable } from './schema.ts';

type Q = Kysely<Database> | Transaction<Database>;

/** The PostgreSQL advisory lock key that orders the event stream's places (an arbitrary constant: 'BSLT'). */
const EVENT_STREAM_LOCK = 0x42534c54;

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
const INSERT_PLACE = prepared<{ event_id: string; project_id: string }>()((q, a) =>
  q.insertInto('event_stream').values({ event_id: a('event_id'), project_id: a('project_id') }));

/**
 * Records an event and its place in the event stream. On PostgreSQL the
 * place is taken under one transaction-scoped lock held to the commit, so
 * places are committed in their order and a reader resuming after one never
 * skips a place committed later (SQLite commits one writer at a time).
 */
export async function recordEvent(q: Q, nowMs: number, e: EventRecord): Promise<void> {
  const id = newId();
  const detail = e.detail ? JSON.stringify(e.detail) : null;
  if (detail !== null && detail.length > DETAIL_MAX_CHARS) throw new Error(`the detail of event ${e.event} is longer than ${DETAIL_MAX_CHARS} characters`);
  await INSERT_EVENT.run(q, {
    id, project_id: e.projectId, resource_type: e.resourceType, resource_id: e.resourceId, event: e.event,
    from_status: e.from ?? null, to_status: e.to ?? null, request_id: e.requestId ?? null, created_at: isoAt(nowMs), detail,
  });
  if (q.getExecutor().adapter instanceof PostgresAdapter) await sql`select pg_advisory_xact_lock(${EVENT_STREAM_LOCK})`.execute(q);
  await INSERT_PLACE.run(q, { event_id: id, project_id: e.projectId });
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
