/**
 * Webhooks (issue 17 part 2), an experimental admin API: register where
 * events are delivered, list and remove webhooks, and read each one's
 * delivery history. Delivery itself is `src/events/webhooks.ts`.
 *
 * - `POST /webhooks` `{"webhook": {"url", "secret", "events"?: ["volume.*", …], "project_id"?}}` → 201
 * - `GET /webhooks`, `GET /webhooks/{id}`, `DELETE /webhooks/{id}` (204)
 * - `GET /webhooks/{id}/deliveries` → the latest attempts, newest first
 *
 * The secret is never shown again; a new webhook receives the events that
 * come after its registration.
 */
import type { FastifyInstance } from 'fastify';
import { isoAt, newId } from '../common/index.ts';
import { NotFoundError } from '../errors/index.ts';
import { webhookSink, webhookView } from '../events/index.ts';
import type { ApiDeps } from './context.ts';
import { EXPERIMENTAL } from './experimental.ts';
import { body, validBody } from './body-declaration.ts';

/** How many attempts the history shows. */
const HISTORY_LIMIT = 200;

const CREATE = {
  type: 'object', required: ['webhook'], additionalProperties: false,
  properties: {
    webhook: {
      type: 'object', required: ['url', 'secret'], additionalProperties: false,
      properties: {
        url: { type: 'string', pattern: '^https?://[^\\s]+$', maxLength: 2048 },
        // Long enough that it cannot be guessed; the receiver checks signatures with it.
        secret: { type: 'string', minLength: 16, maxLength: 256 },
        events: { type: 'array', minItems: 1, maxItems: 50, items: { type: 'string', pattern: '^[a-z_*][a-z_.*]{0,63}$' } },
        project_id: { type: 'string', minLength: 1, maxLength: 255 },
      },
    },
  },
} as const;

/** Registers the routes. */
export function webhookRoutes(deps: ApiDeps) {
  const { db } = deps;
  const find = async (id: string) => {
    const h = await db.kysely.selectFrom('webhooks').selectAll().where('id', '=', id).executeTakeFirst();
    if (!h) throw NotFoundError.of('Webhook', id);
    return h;
  };
  return async (app: FastifyInstance): Promise<void> => {
    app.post('/webhooks', { config: { ...EXPERIMENTAL.config, ...body(CREATE).config } }, async (req, reply) => {
      const w = validBody<{ webhook: { url: string; secret: string; events?: string[]; project_id?: string } }>(req).webhook;
      // It receives what comes after it: its place starts at the end of the stream.
      const last = await db.kysely.selectFrom('event_stream').select((eb) => eb.fn.max('seq').as('m')).executeTakeFirst();
      const row = {
        id: newId(), url: w.url, secret: w.secret, events: (w.events ?? ['*']).join(','), project_id: w.project_id ?? null,
        queued_through: Number(last?.m ?? 0), created_at: isoAt(Date.now()),
      };
      await db.kysely.insertInto('webhooks').values(row).execute();
      return reply.code(201).send({ webhook: webhookView(row) });
    });
    app.get('/webhooks', EXPERIMENTAL, async () => ({
      webhooks: (await db.kysely.selectFrom('webhooks').selectAll().orderBy('created_at').orderBy('id').execute()).map(webhookView),
    }));
    app.get<{ Params: { id: string } }>('/webhooks/:id', EXPERIMENTAL, async (req) => ({ webhook: webhookView(await find(req.params.id)) }));
    app.delete<{ Params: { id: string } }>('/webhooks/:id', EXPERIMENTAL, async (req, reply) => {
      await find(req.params.id);
      // Its queued deliveries find it gone and end; its history stays until it ages out.
      await db.kysely.deleteFrom('webhooks').where('id', '=', req.params.id).execute();
      return reply.code(204).send();
    });
    app.get<{ Params: { id: string } }>('/webhooks/:id/deliveries', EXPERIMENTAL, async (req) => {
      const h = await find(req.params.id);
      const rows = await db.kysely.selectFrom('event_deliveries').selectAll().where('sink', '=', webhookSink(h.id))
        .orderBy('created_at', 'desc').orderBy('attempt', 'desc').limit(HISTORY_LIMIT).execute();
      return {
        deliveries: rows.map((r) => ({
          delivery_id: r.job_id, attempt: r.attempt, outcome: r.outcome, http_status: r.http_status, error: r.error, duration_ms: r.duration_ms,
          event: r.event, resource_type: r.resource_type, resource_id: r.resource_id, project_id: r.project_id, created_at: r.created_at,
        })),
      };
    });
  };
}
