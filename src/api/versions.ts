/** Version discovery: `GET /` (300, every version) and `GET /v3/` (200). */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { MAX_VERSION, MIN_VERSION } from './microversion.ts';
import { baseUrl } from './context.ts';

function document(req: FastifyRequest, experimental: readonly string[]) {
  return {
    versions: [{
      id: 'v3.0',
      status: 'CURRENT',
      version: MAX_VERSION,
      min_version: MIN_VERSION,
      updated: '2022-08-31T00:00:00Z',
      links: [
        { rel: 'describedby', type: 'text/html', href: 'https://docs.openstack.org/' },
        { rel: 'self', href: `${baseUrl(req)}/v3/` },
      ],
      'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.volume+json;version=3' }],
      // Basalt's own key: the routes that answer only with `OpenStack-API-Experimental: true` and may change or vanish.
      experimental_routes: experimental,
    }],
  };
}

/**
 * Registers the version documents. `experimental` lists the experimental
 * routes (`METHOD /v3/{project_id}/…`), read when a document is asked for: the
 * routes are registered after this plugin.
 */
export function versionRoutes(experimental: () => readonly string[]) {
  return async (app: FastifyInstance): Promise<void> => {
    app.get('/', async (req, reply) => reply.code(300).send(document(req, experimental())));
    app.get('/v3', async (req) => document(req, experimental()));
  };
}
