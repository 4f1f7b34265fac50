/** Attachments (3.27+): create, show, list, update with a connector, complete (3.44), delete. */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { cinderTime } from '../common/index.ts';
import type { AttachmentRow } from '../db/index.ts';
import { NotFoundError } from '../errors/index.ts';
import type { AttachmentManager, Connector } from '../volume/index.ts';
import { scopeOf } from '../volume/index.ts';
import type { ApiDeps } from './context.ts';
import { queryValue, truthy } from './pagination.ts';
import { actionBodies, body, requestedAction, validBody } from './body-declaration.ts';

const connector = { type: ['object', 'null'] };
const CREATE = {
  type: 'object', required: ['attachment'], additionalProperties: false,
  properties: {
    attachment: {
      type: 'object', required: ['volume_uuid'], additionalProperties: false,
      properties: {
        volume_uuid: { type: 'string', format: 'uuid' },
        instance_uuid: { anyOf: [{ type: 'string', format: 'uuid' }, { type: 'null' }] },
        connector,
        // cinderclient sends "null" for "honour the volume's settings": read-write here.
        mode: { enum: ['rw', 'ro', 'null', null] },
      },
    },
  },
};
const UPDATE = {
  type: 'object', required: ['attachment'], additionalProperties: false,
  properties: { attachment: { type: 'object', required: ['connector'], additionalProperties: false, properties: { connector: { type: 'object' } } } },
};

function view(a: AttachmentRow, detail: boolean): Record<string, unknown> {
  const v: Record<string, unknown> = { id: a.id, status: a.attach_status, instance: a.instance_uuid, volume_id: a.volume_id };
  if (detail) {
    // As Cinder's view (cinder/api/v3/views/attachments.py): a time not set is '', not null, and an
    // attachment not yet connected has no connection info (null). Detached attachments are deleted here.
    v.attached_at = cinderTime(a.attach_time) ?? '';
    v.detached_at = '';
    v.attach_mode = a.attach_mode;
    v.connection_info = a.connection_info ? JSON.parse(a.connection_info) : null;
  }
  return v;
}

/** Registers the routes. */
export function attachmentRoutes(deps: ApiDeps & { attachmentManager: AttachmentManager }) {
  const { db, attachments, attachmentManager, config } = deps;
  const requireVersion = (req: FastifyRequest, v = '3.27'): void => {
    if (!req.apiVersion.atLeast(v)) throw new NotFoundError('The resource could not be found.');
  };
  return async (app: FastifyInstance): Promise<void> => {
    app.post('/attachments', body(CREATE), async (req) => {
      requireVersion(req);
      const b = validBody<{ attachment: Record<string, unknown> }>(req).attachment;
      const a = await attachmentManager.create(req.caller, {
        volumeId: b.volume_uuid as string,
        instanceUuid: (b.instance_uuid ?? null) as string | null,
        connector: (b.connector ?? null) as Connector | null,
        mode: req.apiVersion.atLeast('3.54') && b.mode === 'ro' ? 'ro' : 'rw',
      });
      return { attachment: view(a, true) };
    });
    const list = (detail: boolean) => async (req: FastifyRequest) => {
      requireVersion(req);
      const q = req.query as Record<string, unknown>;
      const rows = await attachments.list(db.kysely, scopeOf(req.caller, truthy(queryValue(q, 'all_tenants'))), {
        volumeId: queryValue(q, 'volume_id'), instanceId: queryValue(q, 'instance_id'), status: queryValue(q, 'status'),
      }, config.DEFAULT.osapi_max_limit);
      return { attachments: rows.map((a) => view(a, detail)) };
    };
    app.get('/attachments', list(false));
    app.get('/attachments/detail', list(true));
    app.get<{ Params: { id: string } }>('/attachments/:id', async (req) => {
      requireVersion(req);
      return { attachment: view(await attachmentManager.get(req.caller, req.params.id), true) };
    });
    app.put<{ Params: { id: string } }>('/attachments/:id', body(UPDATE), async (req) => {
      requireVersion(req);
      const b = validBody<{ attachment: { connector: Connector } }>(req).attachment;
      return { attachment: view(await attachmentManager.update(req.caller, req.params.id, b.connector), true) };
    });
    app.post<{ Params: { id: string } }>('/attachments/:id/action', actionBodies({ 'os-complete': {} }), async (req, reply) => {
      requireVersion(req, '3.44');
      // Any body but an object with one key is refused (a `true`, a number, text/plain), as on every action route.
      requestedAction(req);
      await attachmentManager.complete(req.caller, req.params.id);
      return reply.code(204).send();
    });
    app.delete<{ Params: { id: string } }>('/attachments/:id', async (req) => {
      requireVersion(req);
      const a = await attachmentManager.get(req.caller, req.params.id);
      await attachmentManager.delete(req.caller, req.params.id);
      return { attachments: (await attachments.ofVolume(db.kysely, a.volume_id)).map((x) => view(x, false)) };
    });
  };
}
