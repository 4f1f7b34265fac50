/** User messages (3.3+): list, show, delete. */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { cinderTime } from '../common/index.ts';
import type { MessageRow } from '../db/index.ts';
import { NotFoundError } from '../errors/index.ts';
import { userMessageText } from '../messages/index.ts';
import { baseUrl, type ApiDeps } from './context.ts';
import { nextLinks, parsePaging, queryValue } from './pagination.ts';

const SORT_KEYS: Record<string, 'created_at' | 'id' | 'event_id' | 'resource_type' | 'message_level'> = {
  created_at: 'created_at', id: 'id', event_id: 'event_id', resource_type: 'resource_type', message_level: 'message_level',
};

function view(req: FastifyRequest, m: MessageRow): Record<string, unknown> {
  return {
    id: m.id,
    event_id: m.event_id,
    user_message: userMessageText(m.action_id, m.detail_id),
    message_level: m.message_level,
    resource_type: m.resource_type,
    resource_uuid: m.resource_uuid,
    created_at: cinderTime(m.created_at),
    guaranteed_until: cinderTime(m.expires_at),
    request_id: m.request_id,
    links: [
      { href: `${baseUrl(req)}/v3/${m.project_id}/messages/${m.id}`, rel: 'self' },
      { href: `${baseUrl(req)}/${m.project_id}/messages/${m.id}`, rel: 'bookmark' },
    ],
  };
}

/** Registers the message routes; they exist from microversion 3.3. */
export function messageRoutes(deps: ApiDeps) {
  const { db, clock, config } = deps;
  const requireVersion = (req: FastifyRequest): void => {
    if (!req.apiVersion.atLeast('3.3')) throw new NotFoundError('The resource could not be found.');
  };
  const find = async (req: FastifyRequest<{ Params: { id: string } }>): Promise<MessageRow> => {
    let q = db.kysely.selectFrom('messages').selectAll().where('id', '=', req.params.id);
    if (!req.caller.isAdmin) q = q.where('project_id', '=', req.caller.projectId);
    const m = await q.executeTakeFirst();
    if (!m) throw NotFoundError.of('Message', req.params.id);
    return m;
  };
  return async (app: FastifyInstance): Promise<void> => {
    app.get('/messages', async (req) => {
      requireVersion(req);
      const q = req.query as Record<string, unknown>;
      const paging = parsePaging(q, SORT_KEYS, config.DEFAULT.osapi_max_limit, [{ column: 'created_at', dir: 'desc' }]);
      let s = db.kysely.selectFrom('messages').selectAll().where('expires_at', '>', new Date(clock.now()).toISOString());
      if (!(req.caller.isAdmin && ['1', 'true'].includes(queryValue(q, 'all_tenants') ?? ''))) s = s.where('project_id', '=', req.caller.projectId);
      for (const f of ['resource_uuid', 'resource_type', 'event_id', 'request_id', 'message_level'] as const) {
        const v = queryValue(q, f);
        if (v !== undefined) s = s.where(f, '=', v);
      }
      if (paging.marker !== undefined) {
        const m = await db.kysely.selectFrom('messages').selectAll().where('id', '=', paging.marker).executeTakeFirst();
        if (!m) throw new NotFoundError(`Marker ${paging.marker} could not be found.`);
        const first = paging.sort[0]!;
        s = s.where((eb) => eb.or([
          eb(first.column, first.dir === 'asc' ? '>' : '<', m[first.column]),
          eb.and([eb(first.column, '=', m[first.column]), eb('id', first.dir === 'asc' ? '>' : '<', m.id)]),
        ]));
      }
      for (const k of paging.sort) s = s.orderBy(k.column, k.dir);
      const rows = await s.orderBy('id', paging.sort[0]!.dir).limit(paging.limit).execute();
      const body: Record<string, unknown> = { messages: rows.map((m) => view(req, m)) };
      const next = nextLinks(req, paging, rows);
      if (next) body.messages_links = next;
      return body;
    });
    app.get<{ Params: { id: string } }>('/messages/:id', async (req) => {
      requireVersion(req);
      return { message: view(req, await find(req)) };
    });
    app.delete<{ Params: { id: string } }>('/messages/:id', async (req, reply) => {
      requireVersion(req);
      const m = await find(req);
      await db.kysely.deleteFrom('messages').where('id', '=', m.id).execute();
      return reply.code(204).send();
    });
  };
}
