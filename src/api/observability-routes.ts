/**
 * `/healthz`, `/readyz` and `/metrics` (see `observability.ts`): outside
 * `/v3`, without authentication, answering no project's data.
 */
import type { FastifyInstance } from 'fastify';
import type { Observability } from './observability.ts';

/** Registers the routes; without `observability` only `/healthz` answers. */
export function observabilityRoutes(observability: Observability | undefined) {
  return async (app: FastifyInstance): Promise<void> => {
    app.get('/healthz', async () => ({ status: 'ok' }));
    if (!observability) return;
    app.get('/readyz', async (_req, reply) => {
      const r = await observability.readiness();
      return reply.code(r.ready ? 200 : 503).send({ status: r.ready ? 'ready' : 'not ready', checks: r.checks, roles: r.roles });
    });
    app.get('/metrics', async (_req, reply) => reply.type(observability.contentType).send(await observability.metrics()));
  };
}
