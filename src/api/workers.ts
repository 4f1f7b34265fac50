/**
 * `POST /workers/cleanup` (3.24, admin): takes over the half-done work of dead
 * services now (see volume/service-cleanup.ts). Answers which services are
 * being cleaned and which dead ones have no live peer to take their work.
 */
import type { FastifyInstance } from 'fastify';
import type { ServiceRow } from '../db/index.ts';
import { NotFoundError } from '../errors/index.ts';
import type { ApiDeps } from './context.ts';
import { body, validBody } from './body-declaration.ts';

const CLEANUP = {
  type: ['object', 'null'], additionalProperties: false,
  properties: {
    cluster_name: { type: 'string', minLength: 1, maxLength: 255 },
    service_id: { type: ['string', 'integer'] },
    host: { type: 'string', minLength: 1, maxLength: 255 },
    binary: { enum: ['cinder-volume', 'cinder-scheduler'] },
    is_up: { type: 'boolean' },
    disabled: { type: 'boolean' },
    resource_id: { type: 'string', format: 'uuid' },
    resource_type: { enum: ['Volume', 'Snapshot'] },
  },
};

interface CleanupBody {
  cluster_name?: string; service_id?: string | number; host?: string; binary?: string;
  is_up?: boolean; disabled?: boolean; resource_id?: string; resource_type?: string;
}

const view = (s: ServiceRow) => ({ id: s.id, host: s.host, binary: s.binary, cluster_name: s.cluster });

/** Registers the route. */
export function workerRoutes(deps: ApiDeps) {
  return async (app: FastifyInstance): Promise<void> => {
    app.post('/workers/cleanup', body(CLEANUP), async (req, reply) => {
      if (!req.apiVersion.atLeast('3.24')) throw new NotFoundError('The resource could not be found.');
      const b = validBody<CleanupBody | null>(req, req.body ?? null) ?? {};
      // A service that is up is doing its own work: only dead ones are cleaned,
      // so `is_up: true` selects nothing.
      const r = b.is_up ? { cleaning: [], unavailable: [] } : await deps.cleanup({
        ...(b.cluster_name !== undefined ? { clusterName: b.cluster_name } : {}),
        ...(b.service_id !== undefined ? { serviceId: String(b.service_id) } : {}),
        ...(b.host !== undefined ? { host: b.host } : {}),
        ...(b.binary !== undefined ? { binary: b.binary } : {}),
        ...(b.disabled !== undefined ? { disabled: b.disabled } : {}),
        ...(b.resource_id !== undefined ? { resourceId: b.resource_id } : {}),
        ...(b.resource_type !== undefined ? { resourceType: b.resource_type } : {}),
      });
      reply.code(202);
      return { cleaning: r.cleaning.map(view), unavailable: r.unavailable.map(view) };
    });
  };
}
