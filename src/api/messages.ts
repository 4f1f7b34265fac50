/** User messages (3.3+): list, show, delete. */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { cinderTime } from '../common/index.ts';
import { MESSAGE_SORT_KEYS, type MessageFilter, type MessageRow } from '../db/index.ts';
import { NotFoundError } from '../errors/index.ts';
import { userMessageText } from '../messages/index.ts';
import { scopeOf } from '../volume/index.ts';
import { baseUrl, type ApiDeps } from './context.ts';
import { nextLinks, parsePaging, queryValue, truthy } from './pagination.ts';

function view(req: FastifyRequest, m: MessageRow): Record<string, unknown> {
  return {
    id: m.id,
    event_id: m.event_id,
    user_message: userMessageText(m.action_id, m.detail_id, m.detail_args),
    message_level: m.message_level,
    created_at: cinderTime(m.created_at),
    guaranteed_until: cinderTime(m.expires_at),
    request_id: m.request_id,
    links: [
      { href: `${baseUrl(req)}/v3/${m.project_id}/messages/${m.id}`, rel: 'self' },
      { href: `${baseUrl(req)}/${m.project_id}/messages/${m.id}`, rel: 'bookmark' },
    ],
    // As Cinder's view: the resource keys only when the message names a resource (never null).
    ...(m.resource_type ? { resource_type: m.resource_type } : {}),
    ...(m.resource_uuid ? { resource_uuid: m.resource_uuid } : {}),
  };
}

/** Registers the message routes; they exist from microversion 3.3. */
export function messageRoutes(deps: ApiDeps) {
  const { db, messages, config } = deps;
  const requireVersion = (req: FastifyRequest): void => {
    if (!req.apiVersion.atLeast('3.3')) throw new NotFoundError('The resource could not be found.');
  };
  const find = async (req: FastifyRequest<{ Params: { id: string } }>): Promise<MessageRow> => {
    requireVersion(req);
    const m = await messages.get(db.kysely, req.params.id, req.caller.isAdmin ? 'all' : { projectId: req.caller.projectId });
    if (!m) throw NotFoundError.of('Message', req.params.id);
    return m;
  };
  return async (app: FastifyInstance): Promise<void> => {
    app.get('/messages', async (req) => {
      requireVersion(req);
      // As in Cinder, paging, sorting and filters apply from 3.5 (MESSAGES_PAGINATION): below it the list is whole.
      const q = req.apiVersion.atLeast('3.5') ? req.query as Record<string, unknown> : {};
      const paging = parsePaging(q, MESSAGE_SORT_KEYS, config.DEFAULT.osapi_max_limit, [{ column: 'created_at', dir: 'desc' }]);
      const filter: MessageFilter = { scope: scopeOf(req.caller, truthy(queryValue(q, 'all_tenants'))) };
      for (const f of ['resource_uuid', 'resource_type', 'event_id', 'request_id', 'message_level'] as const) {
        const v = queryValue(q, f);
        if (v !== undefined) filter[f] = v;
      }
      let marker: MessageRow | undefined;
      if (paging.marker !== undefined) {
        marker = await messages.get(db.kysely, paging.marker, filter.scope);
        if (!marker) throw new NotFoundError(`Marker ${paging.marker} could not be found.`);
      }
      const rows = await messages.list(db.kysely, filter, paging.sort, paging.limit, marker, paging.offset);
      const body: Record<string, unknown> = { messages: rows.map((m) => view(req, m)) };
      const next = nextLinks(req, paging, rows);
      if (next) body.messages_links = next;
      return body;
    });
    app.get<{ Params: { id: string } }>('/messages/:id', async (req) => ({ message: view(req, await find(req)) }));
    app.delete<{ Params: { id: string } }>('/messages/:id', async (req, reply) => {
      await messages.delete(db.kysely, (await find(req)).id);
      return reply.code(204).send();
    });
  };
}
