/**
 * Volume transfers: `os-volume-transfer` (every microversion) and
 * `volume-transfers` (3.55, with `no_snapshots`; 3.57 shows the projects).
 * Create (answers the auth key, once), list, detail, show, accept, delete.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { cinderTime } from '../common/index.ts';
import type { TransferRow } from '../db/index.ts';
import { NotFoundError } from '../errors/index.ts';
import { baseUrl, type ApiDeps } from './context.ts';
import { queryValue, truthy } from './pagination.ts';
import { nameSchema } from './validation.ts';
import { body, validBody } from './body-declaration.ts';

const CREATE = {
  type: 'object', required: ['transfer'], additionalProperties: false,
  properties: {
    transfer: {
      type: 'object', required: ['volume_id'], additionalProperties: false,
      properties: { volume_id: { type: 'string', format: 'uuid' }, name: nameSchema, no_snapshots: { type: 'boolean' } },
    },
  },
};
const ACCEPT = {
  type: 'object', required: ['accept'], additionalProperties: false,
  properties: { accept: { type: 'object', required: ['auth_key'], additionalProperties: false, properties: { auth_key: { type: 'string', minLength: 1, maxLength: 255 } } } },
};

/** Registers both route families. */
export function transferRoutes(deps: ApiDeps) {
  const { transfers } = deps;
  return async (app: FastifyInstance): Promise<void> => {
    for (const base of ['/os-volume-transfer', '/volume-transfers']) {
      const modern = base === '/volume-transfers';
      const guard = (req: FastifyRequest): void => {
        if (modern && !req.apiVersion.atLeast('3.55')) throw new NotFoundError('The resource could not be found.');
      };
      const links = (req: FastifyRequest, t: TransferRow) => [
        { href: `${baseUrl(req)}/v3/${t.project_id}${base}/${t.id}`, rel: 'self' },
        { href: `${baseUrl(req)}/${t.project_id}${base}/${t.id}`, rel: 'bookmark' },
      ];
      const view = (req: FastifyRequest, t: TransferRow, detail: boolean): Record<string, unknown> => {
        const v: Record<string, unknown> = { id: t.id, name: t.name, volume_id: t.volume_id, links: links(req, t) };
        if (detail) {
          v.created_at = cinderTime(t.created_at);
          if (req.apiVersion.atLeast('3.55')) v.no_snapshots = t.no_snapshots === 1;
          if (req.apiVersion.atLeast('3.57')) {
            v.source_project_id = t.project_id;
            v.destination_project_id = null;
            v.accepted = false;
          }
        }
        return v;
      };

      app.post(base, body(CREATE), async (req, reply) => {
        guard(req);
        const b = validBody<{ transfer: { volume_id: string; name?: string | null; no_snapshots?: boolean } }>(req).transfer;
        const { row, authKey } = await transfers.create(req.caller, {
          volumeId: b.volume_id, name: b.name ?? null, noSnapshots: modern && b.no_snapshots === true,
        });
        return reply.code(202).send({ transfer: { ...view(req, row, true), auth_key: authKey } });
      });
      const list = (detail: boolean) => async (req: FastifyRequest) => {
        guard(req);
        const all = truthy(queryValue(req.query as Record<string, unknown>, 'all_tenants'));
        return { transfers: (await transfers.list(req.caller, all)).map((t) => view(req, t, detail)) };
      };
      app.get(base, list(false));
      app.get(`${base}/detail`, list(true));
      app.get<{ Params: { id: string } }>(`${base}/:id`, async (req) => {
        guard(req);
        return { transfer: view(req, await transfers.get(req.caller, req.params.id), true) };
      });
      app.delete<{ Params: { id: string } }>(`${base}/:id`, async (req, reply) => {
        guard(req);
        await transfers.delete(req.caller, req.params.id);
        return reply.code(202).send();
      });
      app.post<{ Params: { id: string } }>(`${base}/:id/accept`, body(ACCEPT), async (req, reply) => {
        guard(req);
        const b = validBody<{ accept: { auth_key: string } }>(req).accept;
        const t = await transfers.accept(req.caller, req.params.id, b.auth_key);
        return reply.code(202).send({ transfer: view(req, { ...t, project_id: req.caller.projectId }, false) });
      });
    }
  };
}
