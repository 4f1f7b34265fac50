/**
 * A project's events as a stream (issue 17 part 2), an experimental API:
 * `GET /v3/{project_id}/events/stream` answers `text/event-stream`
 * (server-sent events), one message per event row of the project — status
 * changes, creations, deletions — in commit order:
 *
 *     id: 42
 *     event: volume.status
 *     data: {"id":42,"resource_type":"volume","resource_id":"…","from_status":"extending","to_status":"in-use",…}
 *
 * `id` is the event's place in the stream (`event_stream.seq`). A client that
 * reconnects with `Last-Event-ID` (what browsers' EventSource sends by itself)
 * gets every event after it and none twice, across disconnects and restarts
 * of Basalt: places are durable rows, strictly increasing in commit order.
 * Without it the stream starts with the next event (`last_event_id=0` in the
 * query replays everything kept). `timeout=S` in the query ends the stream
 * after S seconds (0: what is there now, then the end), for scripts that poll.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { OutgoingHttpHeaders } from 'node:http';
import { sentEvent, type Db, type SentEvent } from '../db/index.ts';
import { InvalidInputError } from '../errors/index.ts';
import type { ApiDeps } from './context.ts';
import { EXPERIMENTAL } from './experimental.ts';
import { queryValue } from './pagination.ts';

/** How often an open stream looks for new events. */
const POLL_MS = 250;
/** How often an idle stream sends a comment, so proxies and clients see it alive. */
const KEEPALIVE_MS = 15_000;
/** Most events read at once. */
const BATCH = 500;

/** Events of `projectId` after place `after`, oldest first. */
async function eventsAfter(db: Db, projectId: string, after: number): Promise<SentEvent[]> {
  const rows = await db.kysely.selectFrom('event_stream as s').innerJoin('events as e', 'e.id', 's.event_id')
    .select(['s.seq', 'e.id', 'e.resource_type', 'e.resource_id', 'e.event', 'e.from_status', 'e.to_status', 'e.request_id', 'e.created_at', 'e.detail'])
    .where('s.project_id', '=', projectId).where('s.seq', '>', after).orderBy('s.seq').limit(BATCH).execute();
  return rows.map((r) => sentEvent(Number(r.seq), r));
}

/** The last place of the whole stream (0 when empty). */
async function lastPlace(db: Db): Promise<number> {
  const r = await db.kysely.selectFrom('event_stream').select((eb) => eb.fn.max('seq').as('m')).executeTakeFirst();
  return Number(r?.m ?? 0);
}

/** Where a request resumes: `Last-Event-ID`, else `last_event_id`, else undefined (from now). @throws InvalidInputError naming it. */
function resumeAfter(header: string | string[] | undefined, query: string | undefined): number | undefined {
  const [name, text] = header !== undefined ? ['Last-Event-ID', Array.isArray(header) ? header[0]! : header] : ['last_event_id', query];
  if (text === undefined) return undefined;
  if (!/^\d{1,15}$/.test(text.trim())) throw new InvalidInputError(`Invalid input received: ${name} must be the id of an event of this stream (a non-negative integer), not '${text}'.`);
  return Number(text.trim());
}

/** Registers the route. */
export function eventStreamRoutes(deps: ApiDeps) {
  return async (app: FastifyInstance): Promise<void> => {
    const open = new Set<() => void>();
    // Open streams never end by themselves: end them before the server waits for its connections.
    app.addHook('preClose', async () => {
      for (const end of open) end();
    });
    app.get('/events/stream', { config: { ...EXPERIMENTAL.config, longLived: true } }, async (req, reply: FastifyReply) => {
      const q = req.query as Record<string, unknown>;
      const timeoutText = queryValue(q, 'timeout');
      if (timeoutText !== undefined && !/^\d{1,6}(\.\d+)?$/.test(timeoutText)) throw new InvalidInputError(`Invalid input received: timeout must be a number of seconds, not '${timeoutText}'.`);
      const deadline = timeoutText === undefined ? Infinity : Date.now() + Number(timeoutText) * 1000;
      let cursor = resumeAfter(req.headers['last-event-id'], queryValue(q, 'last_event_id')) ?? await lastPlace(deps.db);
      const projectId = req.caller.projectId;
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        ...(reply.getHeaders() as OutgoingHttpHeaders),
        'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no',
      });
      // A client that connects again after this long reconnects by itself (EventSource's retry).
      res.write('retry: 1000\n\n');
      let ended = false;
      let timer: NodeJS.Timeout | undefined;
      let lastWrite = Date.now();
      const end = (): void => {
        if (ended) return;
        ended = true;
        clearTimeout(timer);
        open.delete(end);
        res.end();
      };
      open.add(end);
      req.raw.on('close', end);
      res.on('error', end);
      const tick = async (): Promise<void> => {
        try {
          for (;;) {
            const batch = await eventsAfter(deps.db, projectId, cursor);
            if (ended) return;
            for (const e of batch) res.write(`id: ${e.id}\nevent: ${e.event}\ndata: ${JSON.stringify(e)}\n\n`);
            if (batch.length > 0) {
              cursor = batch.at(-1)!.id;
              lastWrite = Date.now();
            }
            if (batch.length < BATCH) break;
          }
          if (Date.now() - lastWrite >= KEEPALIVE_MS) {
            res.write(': keep-alive\n\n');
            lastWrite = Date.now();
          }
        } catch (err) {
          // The database is away: the stream goes on from the same place once it is back.
          req.log.warn({ err }, 'event stream could not read events; trying again');
        }
        if (Date.now() >= deadline) end();
        if (!ended) timer = setTimeout(() => void tick(), Math.min(POLL_MS, Math.max(0, deadline - Date.now())));
      };
      await tick();
    });
  };
}
